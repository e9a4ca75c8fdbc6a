"""Fit the quality gate's model (expected J from signals without ground truth) on synthetic clips.

Renders normal and hard synthetic clips from tuning seeds (never the seeds `make bench-quality`
reports on), builds them with the default pipeline and the gate open, and the hard ones once
more with a deliberately over-sensitive segmenter (so that wrong layers are among the examples),
scores every clip's layers against its truth, fits `vidlayer.gate_calibration.fit` to the true J and writes the
model (by default over the shipped vidlayer/gate_calibration.json). Prints the rank
correlation of the prediction with J, in sample and leave-one-out, and what each threshold
(`quality.min_confidence`) would keep of these clips and their mean J, leave-one-out.

    python bench/calibrate_gate.py [--clips 16] [--seed 7000] [--hard-clips 16] [--hard-seed 7100] [--out PATH]
                                   [--reuse]  # refit on the clips scored last time
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from scipy.stats import spearmanr

from layer_quality import build_open, scored, synth_set
from vidlayer.gate_calibration import SHIPPED, fit

OUT = Path(__file__).resolve().parent / "out" / "calibration"
ROWS = OUT / "rows.json"  # each scored clip's J and metrics, for --reuse
# A segmenter that sees motion everywhere. The default's failures on real footage (terrain taken for the
# subject, flow noise, a matte on nothing) are rare on synthetic clips, and a gate that never saw wrong
# layers cannot learn to recognise them: built this way, the hard clips provide them.
SENSITIVE = ("segment.motion_threshold=1.5", "segment.secondary_salience=0", "segment.min_area_fraction=0.0005",
             "segment.min_persistence=0.1")
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--hard-clips", type=int, default=16)
    parser.add_argument("--hard-seed", type=int, default=7100)
    parser.add_argument("--penalty", type=float, default=1.0, help="L2 penalty on the weights")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--reuse", action="store_true", help="refit on the clips scored last time (rows.json)")
    args = parser.parse_args()
    console = Console()
    if args.reuse and ROWS.exists():
        rows = json.loads(ROWS.read_text())
    else:
        rows = []
        synth = synth_set(OUT / f"synth-clips-{args.seed}", args.clips, args.seed)
        hard = synth_set(OUT / f"hard-clips-{args.hard_seed}", args.hard_clips, args.hard_seed, hard=True)
        for name, data, overrides in (("synth", synth, ()), ("hard", hard, ()), ("hard-sensitive", hard, SENSITIVE)):
            build_open(data / "raw", OUT / name, console, overrides)
            rows += [{"set": name, "clip": r["clip"], "J": r["J"], "metrics": r["metrics"]}
                     for r in scored(OUT / name, data).rows if r["status"] == "scored"]
        ROWS.write_text(json.dumps(rows))
    metrics, targets = [r["metrics"] for r in rows], [r["J"] for r in rows]
    loo = [fit(metrics[:i] + metrics[i + 1:], targets[:i] + targets[i + 1:], args.penalty).predict(metrics[i])
           for i in range(len(rows))]
    notes = {"clips": len(rows), "synth": f"{args.clips} clips of seed {args.seed}",
             "hard": f"{args.hard_clips} hard clips of seed {args.hard_seed}, built twice (default, sensitive)",
             "penalty": args.penalty,
             "spearman_leave_one_out": float(spearmanr(loo, targets).statistic), "mean_J": float(np.mean(targets)),
             "thresholds_leave_one_out": thresholds(loo, targets)}
    model = fit(metrics, targets, args.penalty, notes=notes)
    notes["spearman_in_sample"] = float(spearmanr([model.predict(m) for m in metrics], targets).statistic)
    model.save(args.out)
    console.print(json.dumps(notes, indent=1))
    for name, weight in sorted(zip(model.features, model.weights), key=lambda p: -abs(p[1])):
        console.print(f"{name:32s} {weight:+.3f}")
    console.print(f"written to {args.out}")


def thresholds(predicted: list[float], targets: list[float]) -> dict[str, dict[str, float]]:
    """For each min_confidence: the share of clips it keeps and their mean J."""
    table = {}
    for bound in THRESHOLDS:
        kept = [j for p, j in zip(predicted, targets) if p >= bound]
        table[f"{bound:g}"] = {"share_kept": len(kept) / len(targets), "mean_J_kept": float(np.mean(kept)) if kept else None}
    return table


if __name__ == "__main__":
    main()
