"""Run folders: how one training stage hands its results to the next stage and to the sampler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A training config, override or run folder that cannot be used; the message says why in one line."""


def run_provenance(folder: str | Path) -> dict[str, Any]:
    """`run.json` of a run folder: base model, adapters it built on or exported, options, finished flag."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a training run (no run.json); train the earlier stage first")
    return json.loads(path.read_text())
