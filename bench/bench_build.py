"""Build throughput: per-stage frames per second, clips per minute, and the --workers 2 speed-up.

Runs the default pipeline at its training format (480p, 49 frames at 16 fps) over `vidlayer
synth` clips, once with one Ray worker and once with two, side by side in one run, and prints
the figures (also written to bench/out/build.json).

    python bench/bench_build.py [--clips 6] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.evaluation.speed import stage_rates
from vidlayer.io.manifest import read_manifest
from vidlayer.synth import synthesize

OUT = Path(__file__).resolve().parent / "out"


def timed_build(raw: Path, workers: int) -> tuple[float, list[dict]]:
    out = OUT / f"build-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build(raw, out, load_pipeline("default"), workers=workers, executor="ray", console=Console(quiet=True))
    return time.perf_counter() - start, read_manifest(out / "manifest.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    console = Console()
    raw = OUT / "synth" / "raw"
    if len(list(raw.glob("*.mp4"))) != args.clips:
        shutil.rmtree(OUT / "synth", ignore_errors=True)
        synthesize(OUT / "synth", args.clips, seed=100, seconds=args.seconds)
    runs = {workers: timed_build(raw, workers) for workers in (1, 2)}
    written = {w: sum(r["kind"] == "input" and r["status"] == "written" for r in rows) for w, (_, rows) in runs.items()}
    rates = stage_rates(runs[1][1])
    results = {
        "cores": os.cpu_count(),
        "clips": args.clips,
        "written": written,
        "seconds": {w: t for w, (t, _) in runs.items()},
        "clips_per_minute": {w: args.clips / t * 60 for w, (t, _) in runs.items()},
        "speedup_2_over_1": runs[1][0] / runs[2][0],
        "stage_frames_per_second": rates,
        "pipeline_frames_per_second": 1 / sum(1 / r for r in rates.values()),
    }
    table = Table(title=f"default pipeline, 480p x 49 frames, {args.clips} clips, {os.cpu_count()} cores")
    table.add_column("stage")
    table.add_column("frames/s (one worker)", justify="right")
    table.add_column("s per 49-frame clip", justify="right")
    for stage, rate in rates.items():
        table.add_row(stage, f"{rate:.1f}", f"{49 / rate:.2f}")
    total = results["pipeline_frames_per_second"]
    table.add_row("[bold]all stages", f"[bold]{total:.2f}", f"[bold]{49 / total:.2f}")
    console.print(table)
    for workers in (1, 2):
        console.print(f"--workers {workers}: {results['seconds'][workers]:.1f} s, "
                      f"{results['clips_per_minute'][workers]:.2f} clips/min ({written[workers]} written)")
    console.print(f"[bold]speed-up of --workers 2 over --workers 1: {results['speedup_2_over_1']:.2f}x")
    (OUT / "build.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
