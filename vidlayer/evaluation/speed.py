"""Per-stage speed of a build, read from its manifest's timings."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

STAGES = ("decode", "filter", "window", "ground", "segment", "matte", "inpaint", "foreground", "caption", "quality", "qc",
          "write")


def stage_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Sample frames per second of one worker in each stage, over the written samples.

    Decode and filter work on a small proxy of the whole source, so theirs are per sample
    frame produced, not per frame read.
    """
    seconds, frames = defaultdict(float), defaultdict(float)
    for row in rows:
        if row["kind"] != "sample" or row["status"] != "written":
            continue
        for stage, spent in row["timings"].items():
            seconds[stage] += spent
            frames[stage] += row["frames"]
    return {s: frames[s] / seconds[s] for s in STAGES if seconds.get(s)}
