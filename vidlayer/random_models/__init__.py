"""Randomly initialised, tiny checkpoints of the models the model-backed stages load.

Each writer saves a folder in the layout a real local checkpoint has, so that tests, the demo and
benchmarks run the stages through their real loading code without downloading anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Random weights give layers of arbitrary shape, which the quality gate would rightly drop; a run
# that exercises the plumbing (tests, throughput benchmarks) lets every clip through it.
OPEN_QUALITY_GATE = ("quality.min_confidence=0", "quality.min_coverage=0", "quality.max_coverage=1",
                     "quality.max_flicker=1e9", "quality.max_composite_error=1", "quality.max_composite_error_fg=1")


def tiny_models_overrides(folder: Path, seed: int = 0) -> list[str]:
    """Write tiny random checkpoints of every model `pipelines/models.yaml` loads into `folder`, and
    return the `--set` overrides that point it at them, with the quality gate open and the VLM asked
    even where the source gave every caption (caption and qc share the one VLM)."""
    from vidlayer.random_models.detector import write_tiny_detector
    from vidlayer.random_models.sam2 import write_tiny_sam2
    from vidlayer.random_models.vlm import write_tiny_vlm

    folder = Path(folder)
    detector = write_tiny_detector(folder / "detector", seed=seed)
    sam2 = write_tiny_sam2(folder / "sam2", seed=seed + 1)  # seed 0's random masks cover only a few pixels
    vlm = write_tiny_vlm(folder / "vlm", seed=seed)
    return [f"ground.model={detector}", f"segment.config={sam2 / 'config.yaml'}",
            f"segment.checkpoint={sam2 / 'model.safetensors'}", f"caption.model={vlm}", "caption.keep_given=false",
            f"qc.model={vlm}", *OPEN_QUALITY_GATE]


def spelling_merges(spellings: Iterable[list[str]], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that join each spelling's pieces, left to right, into one token (added to `vocab`):
    a small word list then encodes in a few tokens, which keeps tiny models' prompts short."""
    merges: list[tuple[str, str]] = []
    for pieces in spellings:
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault("".join(pair), len(vocab))
            pieces = ["".join(pair), *pieces[2:]]
    return merges
