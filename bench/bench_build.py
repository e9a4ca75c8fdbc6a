"""Build throughput: per-stage frames per second, clips per minute, and the --workers 2 speed-up.

Runs the default pipeline at its training format (480p, 49 frames at 16 fps) over `vidlayer
synth` clips, once with one Ray worker and once with two, side by side in one run, and prints
the figures (also written to bench/out/build.json). Then times what the latest changes cost,
each against what it replaced, side by side: the camera fit that also tries the frame's border
(against one RANSAC fit) and the second background plane (against the camera's residual alone)
on a hard clip with parallax; GrabCut's wider band (the segment stage at 0.065 against 0.05 of
the short side) on a normal clip; the quality gate's signals (against its composite and flicker
checks alone) and the exemplar fill of never-seen background (against Telea) on a hard clip
whose subject barely moves. All 480p, 49 frames.

    python bench/bench_build.py [--clips 6] [--seconds 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vidlayer.build import build
from vidlayer.clip import Captions, Clip
from vidlayer.config import load_pipeline
from vidlayer.evaluation.speed import stage_rates
from vidlayer.io.manifest import read_manifest
from vidlayer.motion import (camera_flow, correspondences, estimate_motion, fit_camera, plane_residual,
                             ransac_homography, to_full)
from vidlayer.quality_signals import alpha_flicker, composite_errors, measure
from vidlayer.synth import render_scene, synthesize

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
    results["change_costs"] = change_costs(console)
    (OUT / "build.json").write_text(json.dumps(results, indent=2))


def best_of(function: Callable[[], object], repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def run_stage(setting: str, clip: Clip) -> Callable[[], object]:
    """A call of the default pipeline's stage that `setting` (stage.param=value) configures, on a copy of `clip`."""
    stage = load_pipeline("default", [setting]).spec(setting.split(".")[0]).build()
    return lambda: stage.process(dataclasses.replace(clip, metrics={}))


def change_costs(console: Console) -> dict[str, dict[str, float]]:
    """Seconds per 49-frame 480p clip of each change and of what it replaced, measured in turn."""
    size = {"width": 854, "height": 480, "fps": 16, "seconds": 49 / 16}
    scene = render_scene(100, 2, **size, hard=True)  # hard mode "static": a subject that barely moves
    motion = estimate_motion(scene.full)
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=scene.full,
                alphas=scene.alphas, foregrounds=scene.foregrounds, background=scene.background, motion=motion)
    moving = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"),
                  frames=render_scene(100, 0, **size).full, fps=16)
    parallax = estimate_motion(render_scene(100, 1, **size, hard=True).full)
    camera = camera_flow(parallax)

    def one_fit() -> None:
        for flow in parallax.flow:
            to_full(ransac_homography(*correspondences(flow)[:2]), parallax.scale)

    pairs = {
        "camera fit (segment)": (lambda: [fit_camera(f, parallax.scale) for f in parallax.flow], one_fit),
        "second background plane (segment)": (lambda: plane_residual(parallax.flow, camera),
                                              lambda: parallax.flow - camera),
        "refine band 0.065 (segment)": (run_stage("segment.refine_band=0.065", moving),
                                        run_stage("segment.refine_band=0.05", moving)),
        "quality signals (quality)": (lambda: measure(clip), lambda: (
            composite_errors(scene.full, scene.foregrounds, scene.alphas, scene.background),
            alpha_flicker(scene.alphas.sum(axis=0), motion.flow))),
        "never-seen fill (inpaint)": (run_stage("inpaint.unseen_fill=patchmatch", clip),
                                      run_stage("inpaint.unseen_fill=telea", clip)),
    }
    costs = {}
    table = Table(title="what the latest changes cost, side by side, s per 49-frame 480p clip")
    for column in ("change", "new s", "replaced s", "ratio"):
        table.add_column(column, justify="left" if column == "change" else "right")
    for name, (new, old) in pairs.items():
        new_s, old_s = best_of(new), best_of(old)
        costs[name] = {"new_seconds": new_s, "replaced_seconds": old_s, "ratio": new_s / old_s}
        table.add_row(name, f"{new_s:.2f}", f"{old_s:.2f}", f"{new_s / old_s:.2f}x")
    console.print(table)
    return costs


if __name__ == "__main__":
    main()
