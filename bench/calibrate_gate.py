"""Fit the quality gate's model (expected J from signals without ground truth) on synthetic clips.

Renders normal and hard synthetic clips from tuning seeds (never the seeds `make bench-quality`
reports on), builds them with the default pipeline and the gate open, scores every clip's
layers against its truth, fits `vidlayer.gate_calibration.fit` to the true J and writes the
model (by default over the shipped vidlayer/gate_calibration.json). Prints the rank
correlation of the prediction with J, in sample and leave-one-out.

    python bench/calibrate_gate.py [--clips 16] [--seed 7000] [--hard-clips 16] [--hard-seed 7100] [--out PATH]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--hard-clips", type=int, default=16)
    parser.add_argument("--hard-seed", type=int, default=7100)
    parser.add_argument("--penalty", type=float, default=2.0, help="L2 penalty on the weights")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args()
    console = Console()
    rows = []
    for name, clips, seed, hard in (("synth", args.clips, args.seed, False),
                                    ("hard", args.hard_clips, args.hard_seed, True)):
        data = synth_set(OUT / f"{name}-clips-{seed}", clips, seed, hard)
        build_open(data / "raw", OUT / name, console)
        rows += [r for r in scored(OUT / name, data).rows if r["status"] == "scored"]
    metrics, targets = [r["metrics"] for r in rows], [r["J"] for r in rows]
    loo = [fit(metrics[:i] + metrics[i + 1:], targets[:i] + targets[i + 1:], args.penalty).predict(metrics[i])
           for i in range(len(rows))]
    notes = {"clips": len(rows), "synth": f"{args.clips} clips of seed {args.seed}",
             "hard": f"{args.hard_clips} hard clips of seed {args.hard_seed}", "penalty": args.penalty,
             "spearman_leave_one_out": float(spearmanr(loo, targets).statistic), "mean_J": float(np.mean(targets))}
    model = fit(metrics, targets, args.penalty, notes=notes)
    notes["spearman_in_sample"] = float(spearmanr([model.predict(m) for m in metrics], targets).statistic)
    model.save(args.out)
    console.print(json.dumps(notes, indent=1))
    for name, weight in sorted(zip(model.features, model.weights), key=lambda p: -abs(p[1])):
        console.print(f"{name:32s} {weight:+.3f}")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
