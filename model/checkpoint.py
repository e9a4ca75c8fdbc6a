"""Training checkpoints that resume exactly and never need pickle.

A checkpoint is a folder: tensors (trainable weights, EMA, optimizer moments, RNG states)
in safetensors, everything else (step, schedule, data position, optimizer hyper-parameters)
in one JSON. It is written to a temporary folder and renamed, so a kill mid-save leaves
the previous checkpoint intact; one damaged later (a full disk, a copy cut short) is skipped
on resume in favour of the newest good one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .runs import ConfigError

logger = logging.getLogger(__name__)
TENSORS = "state.safetensors"
META = "state.json"
PREFIX = "step-"


def _split(tree: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by a {"__tensor__": key} reference into `tensors`."""
    if isinstance(tree, torch.Tensor):
        tensors[path] = tree.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(tree, dict):
        return {str(k): _split(v, f"{path}.{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(tree)]
    return tree


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def save_checkpoint(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` (nested dicts/lists of tensors and JSON values) as checkpoint `step-N`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:07d}"
    partial = folder / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(state, "state", tensors)
    save_file(tensors, partial / TENSORS)
    (partial / META).write_text(json.dumps({"step": step, "state": meta}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that can be loaded, None when `folder` holds no checkpoint at all.

    A damaged one is skipped with a warning, so a run falls back to the previous good one instead
    of crashing; when every one is damaged that is an error, not a silent start from scratch.
    """
    found = sorted(folder.glob(f"{PREFIX}*"), reverse=True) if folder.exists() else []
    newest = ""
    for path in found:
        problem = _damage(path)
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s, it cannot be loaded: %s", path, problem)
        newest = newest or f"{path.name}: {problem}"
    if found:
        raise ConfigError(f"no checkpoint in {folder} can be loaded (the newest, {newest}); "
                          "remove them or train with --no-resume")
    return None


def _damage(path: Path) -> str | None:
    """Why `load_checkpoint(path)` would fail, or None; reads the JSON and the tensor header, not the tensors.

    A truncated safetensors file no longer covers the byte ranges its header lists, so a cut-short
    save or copy shows here without reading gigabytes of weights.
    """
    try:
        json.loads((path / META).read_text())
        with safe_open(path / TENSORS, framework="pt"):
            pass
    except (OSError, ValueError, SafetensorError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def load_checkpoint(path: Path) -> tuple[int, dict[str, Any]]:
    """(step, state) of a checkpoint folder written by `save_checkpoint`."""
    meta = json.loads((path / META).read_text())
    return meta["step"], _join(meta["state"], load_file(path / TENSORS))


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with integer keys made JSON-safe."""
    state = optimizer.state_dict()
    return {"state": {str(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    optimizer.load_state_dict({"state": {int(k): v for k, v in saved["state"].items()},
                               "param_groups": saved["param_groups"]})
