"""Layer extraction of the default pipeline against ground truth, the quality gate's precision, and stage speeds.

Builds, with the default (weights-free) pipeline, two Ray workers and the quality gate open:
1. `synth`: `vidlayer synth` clips from a seed nobody tuned on (default 20 clips, seed 8000);
2. `hard`: `vidlayer synth --hard` clips (camera tracking the subject, parallax, near-static
   subjects, late entries; default 12 clips, seed 8100; the gate is calibrated on 7000/7100);
3. `davis`: the real DAVIS clips in ../shared/bench/davis (segmentation truth only);
4. `composite`: real foregrounds over real backgrounds in ../shared/bench/composite (every layer known).
Every clip's layers are scored with `vidlayer eval`; the default gate's decision is then taken
from the recorded metrics (`vidlayer.stages.quality.verdict`), so the pipeline's figures (a clip
the gate drops scores 0 in "J over all clips") and the gate's precision come from the same
clips. Writes bench/out/quality/<set>/report.md (pictures of the worst clips),
bench/out/quality/summary.md and quality.json: the figures, the issue's targets with pass or
fail, the gate's yield and rank correlation per set and pooled, and frames per second per stage.

    python bench/bench_quality.py [--clips 20] [--seed 8000] [--hard-clips 12] [--hard-seed 8100] [--reuse]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from layer_quality import build_open, scored, synth_set
from vidlayer.config import load_pipeline
from vidlayer.evaluation.evaluate import finite_mean, rank_correlation
from vidlayer.evaluation.report import write_report
from vidlayer.evaluation.speed import stage_rates
from vidlayer.io.manifest import read_manifest
from vidlayer.stages.quality import verdict

OUT = Path(__file__).resolve().parent / "out" / "quality"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
# (data set, figure, direction, bound): the targets of the weights-free pipeline.
TARGETS = (("synth", "J_all_clips", ">=", 0.90), ("synth", "alpha_mse", "<=", 0.005),
           ("synth", "bg_psnr_covered", ">=", 30.0), ("davis", "J_all_clips", ">=", 0.80),
           ("composite", "J_all_clips", ">=", 0.75), ("composite", "alpha_mse", "<=", 0.01),
           ("composite", "bg_psnr_covered", ">=", 25.0), ("pooled", "spearman_confidence_J", ">=", 0.6),
           ("pooled", "written_mean_J", ">=", 0.85), ("pooled", "share_written", ">=", 0.25))
MIN_STAGE_FPS = 1.0  # per worker (one core) at 480p
LAYER_FIGURES = ("alpha_mse", "alpha_sad", "alpha_dtssd", "bg_psnr_covered", "bg_ssim_covered", "bg_psnr_visible",
                 "fg_psnr", "F", "J_instances")


def measure_set(name: str, raw: Path, truth: Path, console: Console, reuse: bool) -> dict:
    """Build one data set with the gate open, score every clip, and judge it with the default gate.

    The gate's confidence is predicted again from the recorded signals, so `reuse` (the build and
    scores of the last run) judges them with the gate model and thresholds as they are now.
    """
    out = OUT / name
    cache = out / "scored.json"
    if reuse and cache.exists():
        rows = json.loads(cache.read_text())
    else:
        seconds = build_open(raw, out, console)
        evaluation = scored(out, truth)
        write_report(evaluation, out / "build", truth, out / "report.md", title=f"Default pipeline on {name}")
        rows = {"build_seconds": seconds, "rows": evaluation.rows}
        cache.write_text(json.dumps(rows))
    gate_spec = load_pipeline("default").spec("quality")
    gate, model = gate_spec.params, gate_spec.build().model
    clips = {}
    for row in rows["rows"]:
        clip = clips.setdefault(row["clip"], {"clip": row["clip"], "J": 0.0, "written": False, "reason": ""})
        if row["status"] != "scored":
            clip["reason"] = row.get("reason", row["status"])
            continue
        metrics = {**row["metrics"], "quality_confidence": model.predict(row["metrics"])}
        failure = verdict(metrics, gate)
        clip.update(J=row["J"], confidence=metrics["quality_confidence"], written=failure is None,
                    reason=failure[0] if failure else "", layers={k: row[k] for k in LAYER_FIGURES if k in row})
    return {"clips": list(clips.values()), "figures": figures(list(clips.values())),
            "build_seconds": rows["build_seconds"], "report": str(out / "report.md"),
            "stage_frames_per_second": stage_rates(read_manifest(out / "build" / "manifest.parquet"))}


def figures(clips: list[dict]) -> dict[str, float | None]:
    """What the default pipeline delivers (dropped clips score 0) and how well its gate chose."""
    written = [c for c in clips if c["written"]]
    judged = [c for c in clips if "confidence" in c]
    result = {
        "clips": len(clips),
        "J_all_clips": finite_mean([c["J"] if c["written"] else 0.0 for c in clips]),
        "J_open_gate": finite_mean([c["J"] for c in clips]),
        "written_mean_J": finite_mean([c["J"] for c in written]),
        "share_written": len(written) / len(clips) if clips else None,
        "spearman_confidence_J": rank_correlation([c["confidence"] for c in judged], [c["J"] for c in judged]),
    }
    for name in LAYER_FIGURES:
        result[name] = finite_mean([c["layers"].get(name) for c in written])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seed", type=int, default=8000)
    parser.add_argument("--hard-clips", type=int, default=12)
    parser.add_argument("--hard-seed", type=int, default=8100)
    parser.add_argument("--davis", type=Path, default=SHARED / "davis")
    parser.add_argument("--composite", type=Path, default=SHARED / "composite")
    parser.add_argument("--reuse", action="store_true",
                        help="judge the builds and scores of the last run again (after a gate change), without rebuilding")
    args = parser.parse_args()
    console = Console()
    sets = {"synth": synth_set(OUT / f"synth-clips-{args.seed}", args.clips, args.seed),
            "hard": synth_set(OUT / f"hard-clips-{args.hard_seed}", args.hard_clips, args.hard_seed, hard=True),
            "davis": args.davis, "composite": args.composite}
    results = {}
    for name, folder in sets.items():
        if (folder / "raw").is_dir():
            results[name] = measure_set(name, folder / "raw", folder, console, args.reuse)
        else:
            console.print(f"[yellow]no clips at {folder}/raw: the {name} figures are not measured")
    pooled = figures([c for r in results.values() for c in r["clips"]])
    results["pooled"] = {"figures": pooled}
    checks = []
    for data, figure, direction, bound in TARGETS:
        value = results.get(data, {}).get("figures", {}).get(figure)
        passed = value is not None and (value >= bound if direction == ">=" else value <= bound)
        checks.append({"data": data, "figure": figure, "target": f"{direction} {bound:g}", "value": value,
                       "passed": passed})
    rates = {}
    for name in ("synth", "davis", "composite", "hard"):
        for stage, rate in results.get(name, {}).get("stage_frames_per_second", {}).items():
            rates[stage] = min(rate, rates.get(stage, rate))
    if rates:
        checks.append({"data": "all", "figure": "slowest stage fps (one worker, 480p)",
                       "target": f">= {MIN_STAGE_FPS:g}", "value": min(rates.values()),
                       "passed": min(rates.values()) >= MIN_STAGE_FPS})
    results["targets"] = checks
    show(console, results, checks, rates)
    (OUT / "quality.json").write_text(json.dumps(results, indent=1))
    (OUT / "summary.md").write_text(summary_markdown(results, rates))
    console.print(f"summary: {OUT / 'summary.md'}; reports: "
                  f"{', '.join(r['report'] for r in results.values() if 'report' in r)}")


def show(console: Console, results: dict, checks: list[dict], rates: dict[str, float]) -> None:
    sets = Table(title="per data set (default gate; dropped clips score 0 in J over all clips)")
    columns = ("J_all_clips", "J_open_gate", "alpha_mse", "bg_psnr_covered", "written_mean_J", "share_written",
               "spearman_confidence_J")
    sets.add_column("data")
    for column in columns:
        sets.add_column(column, justify="right")
    for name, result in results.items():
        if "figures" in result and name != "targets":
            sets.add_row(name, *(fmt(result["figures"].get(c)) for c in columns))
    console.print(sets)
    table = Table(title="targets")
    for column in ("data", "figure", "target", "measured", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(c["data"], c["figure"], c["target"], fmt(c["value"]),
                      "[green]pass" if c["passed"] else "[red]FAIL")
    console.print(table)
    speed = Table(title="frames per second per stage, one worker, 480p (slowest over the data sets)")
    speed.add_column("stage")
    speed.add_column("frames/s", justify="right")
    for stage, rate in rates.items():
        speed.add_row(stage, f"{rate:.1f}")
    console.print(speed)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def summary_markdown(results: dict, rates: dict[str, float]) -> str:
    lines = ["# Layer extraction quality (default pipeline)", "", "| data | figure | target | measured | |",
             "|---|---|---|---:|---|"]
    lines += [f"| {c['data']} | {c['figure']} | {c['target']} | {fmt(c['value'])} | {'pass' if c['passed'] else 'FAIL'} |"
              for c in results["targets"]]
    lines += ["", "| stage | frames/s (one worker, slowest set) |", "|---|---:|"]
    lines += [f"| {s} | {r:.1f} |" for s, r in rates.items()]
    for name, result in results.items():
        if "clips" not in result:
            continue
        lines += ["", f"## {name}", "", f"Report: [{name}/report.md]({name}/report.md); build "
                  f"{result['build_seconds']:.0f} s with 2 workers.", "", "| figure | value |", "|---|---:|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in result["figures"].items()]
        lines += ["", "| clip | J | confidence | written | reason |", "|---|---:|---:|---|---|"]
        lines += [f"| {c['clip']} | {c['J']:.3f} | {fmt(c.get('confidence'))} | {'yes' if c['written'] else 'no'} "
                  f"| {c['reason']} |" for c in sorted(result["clips"], key=lambda c: c["J"])]
    lines += ["", "## pooled", "", "| figure | value |", "|---|---:|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in results["pooled"]["figures"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
