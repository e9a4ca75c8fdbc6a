"""Shared by the quality benchmark and the gate's calibration: build with the gate open, score every clip.

The gate is a function of recorded metrics (`vidlayer.stages.quality.verdict`), so one build with
it open gives both what every clip's layers score against the truth and what the default gate
would have decided: the pipeline's figures and the gate's precision come from the same clips.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.evaluation.evaluate import Evaluation, evaluate
from vidlayer.io.manifest import read_manifest
from vidlayer.random_models import OPEN_QUALITY_GATE
from vidlayer.synth import synthesize


def synth_set(folder: Path, clips: int, seed: int, hard: bool = False) -> Path:
    """`clips` synthetic clips of `seed` in `folder` (raw/ and gt/), rendered unless already there."""
    if len(list((folder / "raw").glob("*.mp4"))) != clips:
        shutil.rmtree(folder, ignore_errors=True)
        synthesize(folder, clips, seed=seed, hard=hard)
    return folder


def build_open(raw: Path, out: Path, console: Console, overrides: tuple[str, ...] = ()) -> float:
    """Build `raw` into `out/build` with the default pipeline and the gate open; the build's seconds."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build(raw, out / "build", load_pipeline("default", [*OPEN_QUALITY_GATE, *overrides]), workers=2,
          executor="ray", console=console)
    return time.perf_counter() - start


def scored(out: Path, truth: Path) -> Evaluation:
    """The evaluation of `out/build` against `truth`, each row carrying its sample's recorded metrics."""
    evaluation = evaluate(out / "build", truth)
    metrics = {r["key"]: r["metrics"] or {} for r in read_manifest(out / "build" / "manifest.parquet")}
    for row in evaluation.rows:
        row["metrics"] = metrics.get(row["sample"], {})
    return evaluation
