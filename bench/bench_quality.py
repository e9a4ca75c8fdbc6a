"""Layer extraction of the default pipeline against ground truth, and the speed of each stage.

Builds, with the default (weights-free) pipeline and two Ray workers:
1. `vidlayer synth` clips from a seed nobody tuned on (default 20 clips, seed 8000; seed 7000
   was used to develop the inpainting vote, so its figures are not independent);
2. the real DAVIS clips in ../shared/bench/davis (segmentation truth only);
scores each with `vidlayer eval`, and writes bench/out/quality/{synth,davis}/report.md (with
pictures of the worst clips), bench/out/quality/summary.md and quality.json: the figures,
the issue's targets with pass or fail, and frames per second per stage at 480p.

    python bench/bench_quality.py [--clips 20] [--seed 8000] [--davis PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.evaluation.evaluate import evaluate
from vidlayer.evaluation.report import write_report
from vidlayer.evaluation.speed import stage_rates
from vidlayer.io.manifest import read_manifest
from vidlayer.synth import synthesize

OUT = Path(__file__).resolve().parent / "out" / "quality"
DAVIS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "davis"
# (data set, summary figure, direction, bound): the targets for the weights-free pipeline.
TARGETS = (("synth", "J_all_clips", ">=", 0.90), ("synth", "alpha_mse", "<=", 0.005),
           ("synth", "bg_psnr_covered", ">=", 30.0), ("davis", "J_all_clips", ">=", 0.60))
MIN_STAGE_FPS = 1.0  # per worker (one core) at 480p


def build_and_score(name: str, raw: Path, truth: Path, console: Console) -> dict:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build(raw, out / "build", load_pipeline("default"), workers=2, executor="ray", console=console)
    seconds = time.perf_counter() - start
    evaluation = evaluate(out / "build", truth)
    report = write_report(evaluation, out / "build", truth, out / "report.md", title=f"Default pipeline on {name}")
    rows = read_manifest(out / "build" / "manifest.parquet")
    return {"summary": evaluation.summary(), "rows": evaluation.rows, "build_seconds": seconds,
            "stage_frames_per_second": stage_rates(rows), "report": str(report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seed", type=int, default=8000)
    parser.add_argument("--davis", type=Path, default=DAVIS)
    args = parser.parse_args()
    console = Console()
    synth = OUT / f"synth-clips-{args.seed}"
    if len(list((synth / "raw").glob("*.mp4"))) != args.clips:
        shutil.rmtree(synth, ignore_errors=True)
        synthesize(synth, args.clips, seed=args.seed)
    results = {"synth": build_and_score("synth", synth / "raw", synth, console)}
    if (args.davis / "raw").is_dir():
        results["davis"] = build_and_score("davis", args.davis / "raw", args.davis, console)
    else:
        console.print(f"[yellow]no DAVIS clips at {args.davis}: its target is not measured (pass --davis)")

    checks = []
    for data, figure, direction, bound in TARGETS:
        value = results.get(data, {}).get("summary", {}).get(figure)
        passed = value is not None and (value >= bound if direction == ">=" else value <= bound)
        checks.append({"data": data, "figure": figure, "target": f"{direction} {bound:g}", "value": value,
                       "passed": passed})
    rates = results["synth"]["stage_frames_per_second"]
    checks.append({"data": "synth", "figure": "slowest stage fps (one worker, 480p)",
                   "target": f">= {MIN_STAGE_FPS:g}", "value": min(rates.values()),
                   "passed": min(rates.values()) >= MIN_STAGE_FPS})
    results["targets"] = checks

    table = Table(title="targets")
    for column in ("data", "figure", "target", "measured", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(c["data"], c["figure"], c["target"], "-" if c["value"] is None else f"{c['value']:.4g}",
                      "[green]pass" if c["passed"] else "[red]FAIL")
    console.print(table)
    speed = Table(title="frames per second per stage, one worker, 480p (synth clips)")
    speed.add_column("stage")
    speed.add_column("frames/s", justify="right")
    for stage, rate in rates.items():
        speed.add_row(stage, f"{rate:.1f}")
    console.print(speed)
    (OUT / "quality.json").write_text(json.dumps(results, indent=1))
    (OUT / "summary.md").write_text(_summary_markdown(results))
    console.print(f"reports: {', '.join(r['report'] for k, r in results.items() if k != 'targets')}; "
                  f"summary: {OUT / 'summary.md'}")


def _summary_markdown(results: dict) -> str:
    lines = ["# Layer extraction quality (default pipeline)", "", "| data | figure | target | measured | |",
             "|---|---|---|---:|---|"]
    for c in results["targets"]:
        value = "-" if c["value"] is None else f"{c['value']:.4g}"
        lines.append(f"| {c['data']} | {c['figure']} | {c['target']} | {value} | {'pass' if c['passed'] else 'FAIL'} |")
    for name in ("synth", "davis"):
        if name not in results:
            continue
        lines += ["", f"## {name}", "", f"Report: [{name}/report.md]({name}/report.md); build "
                  f"{results[name]['build_seconds']:.0f} s with 2 workers.", "", "| figure | mean |", "|---|---:|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in results[name]["summary"].items() if isinstance(v, float)]
        lines += ["", "| stage | frames/s (one worker) |", "|---|---:|"]
        lines += [f"| {s} | {r:.1f} |" for s, r in results[name]["stage_frames_per_second"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
