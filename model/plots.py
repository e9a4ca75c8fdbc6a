"""Pictures of training: the loss curve a person looks at before reading numbers."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(metrics: Path, out: Path, title: str = "training loss") -> Path | None:
    """Loss against step from a metrics.jsonl (raw and smoothed), plus the learning rate."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    rows = [r for r in rows if isinstance(r.get("loss"), (int, float))]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    smoothed, value = [], losses[0]
    for loss in losses:
        value = 0.8 * value + 0.2 * loss
        smoothed.append(value)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, label="loss")
    ax.plot(steps, smoothed, color="tab:blue", label="loss (EMA 0.8)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    if any("lr" in r for r in rows):
        lr = ax.twinx()
        lr.plot(steps, [r.get("lr") for r in rows], color="tab:orange", alpha=0.6, label="lr")
        lr.set_ylabel("learning rate", color="tab:orange")
    ax.legend(loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
