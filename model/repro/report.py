"""The report of a toy-scale ablation study: from scored runs to docs/RESULTS.md.

Several variants are trained with several seeds each and their samples scored by
`vidlayer eval-generation`. A claim of the paper is only worth repeating when the difference it
predicts is larger than the spread between seeds, so every number is shown as mean ± std over
seeds, and each claim is judged against that spread rather than against a single run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ADHERENCE_PARTS = ("colour_accuracy", "shape_accuracy", "motion_accuracy", "texture_accuracy")
EMA = 0.9  # loss smoothing: seeds differ step to step far more than in trend
GRID_WIDTH = 900  # widest a contact sheet is drawn in the grid (pixels)
LABEL_HEIGHT, LABEL_SIZE = 26, 16  # strip above each sheet in the grid and its font size (pixels)
MISSING = "–"


@dataclass(frozen=True)
class Metric:
    """How to print a metric, which way is better, and the least difference worth calling one."""

    header: str
    higher_is_better: bool
    tol: float
    meaning: str


_ACC, _SMALL = 0.02, 0.002
METRICS: dict[str, Metric] = {
    "adherence": Metric("adherence", True, _ACC, "mean of the colour, shape, motion and texture accuracies: how "
                                                 "closely the layers follow the prompt"),
    "colour_accuracy": Metric("colour", True, _ACC, "share of objects whose fg layer (inside alpha > 0.5) has the "
                                                    "requested hue, read as the nearest of six named hues"),
    "shape_accuracy": Metric("shape", True, _ACC, "share of objects whose matte best matches the requested shape "
                                                  "(rotation-aware IoU against templates)"),
    "motion_accuracy": Metric("motion", True, _ACC, "share of objects whose matte moves as requested (zoom, "
                                                    "left/right/up/down, rotate or still), from trends over the clip"),
    "texture_accuracy": Metric("texture", True, _ACC, "share of backgrounds whose texture is classified as the "
                                                      "requested one"),
    "bg_colour_accuracy": Metric("bg_colour", True, _ACC, "share of backgrounds whose hue is the requested colour"),
    "drift_accuracy": Metric("drift", True, _ACC, "share of backgrounds whose fitted whole-frame drift (or still) "
                                                  "is the requested one"),
    "coherence": Metric("coherence", False, _SMALL, "mean |full − composite(fg, alpha, bg)| in 0..1: whether the "
                                                    "layers add up to the full video"),
    "bg_leak": Metric("bg_leak", False, _SMALL, "share of background pixels that look like a requested object "
                                                "(saturated, bright, of its hue)"),
    "fg_texture": Metric("fg_texture", False, _SMALL, "mean gradient magnitude (0..1) inside the eroded matte: toy "
                                                      "objects are flat, so texture there came from elsewhere"),
    "alpha_edge_width": Metric("alpha_edge_width", False, 0.05, "width in pixels of the soft transition at the "
                                                                "matte's outline (about 1 for a crisp edge)"),
    "alpha_soft": Metric("alpha_soft", False, _SMALL, "soft alpha pixels away from the outline, per pixel of "
                                                      "matte (0 for a binary matte)"),
    "temporal_change": Metric("temporal_change", False, _SMALL, "mean |fg[t+1] − fg[t]| (0..1) inside consecutive "
                                                                "mattes: toy objects keep their colour, so this "
                                                                "is flicker"),
}
TABLE = ("adherence", "colour_accuracy", "shape_accuracy", "motion_accuracy", "texture_accuracy", "coherence",
         "bg_leak", "fg_texture", "alpha_edge_width", "alpha_soft", "temporal_change")

SUPPORTS, CONTRADICTS, NOISE, UNMEASURED = "supports", "contradicts", "within noise", "not measured"
HOLDS, CONTRADICTED, UNRESOLVED = "holds", "contradicted", "not resolved"


def write_results(results: dict[str, Any], out_md: Path, figures: Path) -> Path:
    """Write the markdown report `out_md` and its figures (PNG) into the folder `figures`; return out_md."""
    out_md, figures = Path(out_md), Path(figures)
    for claim in results.get("claims", []):
        unknown = [m for m in claim["metrics"] if m not in METRICS]
        if unknown:
            raise ValueError(f"claim {claim['claim']!r} names unknown metrics {unknown}; known: {', '.join(METRICS)}")
    figures.mkdir(parents=True, exist_ok=True)
    rows = results.get("rows", [])
    lines = [f"# {results.get('title', 'Results')}", ""]
    lines += [f"- {key}: {_setting(value)}" for key, value in results.get("settings", {}).items()]
    lines += ["", "## What was run", ""] + [_describe(row) for row in rows]
    lines += ["", "## Scores", "", *_main_table(rows), "",
              f"Each cell: mean ± sample std over seeds (n=k where only k seeds had a value); {MISSING}: nothing "
              "measurable; bold: the best variant in the column.", ""]
    lines += ["## Generalisation", "", *_split_table(rows), ""]
    lines += ["## How to read the columns", ""]
    used = list(TABLE) + [m for c in results.get("claims", []) for m in c["metrics"] if m not in TABLE]
    lines += [f"- {METRICS[m].header}: {METRICS[m].meaning}; {'higher' if METRICS[m].higher_is_better else 'lower'} "
              "is better." for m in dict.fromkeys(used)]
    lines += ["", "## Claims", "", *_claims(rows, results.get("claims", [])), ""]
    lines += ["## Training loss", ""]
    loss = _plot_losses(rows, figures / "loss_curves.png")
    if loss:
        lines += [f"EMA-smoothed ({EMA}) training loss, mean over seeds on the steps every seed logged; the band "
                  "spans min..max over seeds.", "", f"![loss curves]({_relative(loss, out_md)})"]
    else:
        lines.append("No run logged a training loss, so there is no loss figure.")
    lines += ["", "## Generated layers", ""]
    grid = _grid(rows, figures / "samples_grid.png")
    if grid:
        lines += ["One contact sheet per row (seed 0 where it has one).", "",
                  f"![generated layers]({_relative(grid, out_md)})"]
    else:
        lines.append("No run has a contact sheet, so there is no grid of generated layers.")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
    return out_md


# ---------------------------------------------------------------------------------------------
# Numbers


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def adherence(summary: dict[str, Any]) -> float | None:
    """Mean of the four prompt accuracies that were measured: one number for "does it follow the prompt"."""
    parts = [summary.get(name) for name in ADHERENCE_PARTS]
    parts = [p for p in parts if _number(p)]
    return float(np.mean(parts)) if parts else None


def _value(summary: dict[str, Any], metric: str) -> float | None:
    value = adherence(summary) if metric == "adherence" else summary.get(metric)
    return float(value) if _number(value) else None


def _seeds(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's seed entries, lowest seed first."""
    seeds = row.get("seeds", {})
    return [seeds[key] or {} for key in sorted(seeds, key=_seed_order)]


def _seed_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if str(key).isdigit() else (1, str(key))


def _values(row: dict[str, Any] | None, metric: str, split: str | None = None) -> list[float]:
    """The metric over the row's seeds (overall, or on one split), missing ones left out."""
    values = []
    for seed in _seeds(row or {}):
        summary = seed.get("summary") or {}
        if split is not None:
            summary = (summary.get("by_split") or {}).get(split) or {}
        value = _value(summary, metric)
        if value is not None:
            values.append(value)
    return values


def _spread(values: list[float]) -> float:
    """Sample std (ddof=1); 0 with one value, where no spread was measured."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(values: list[float], seeds: int) -> str:
    if not values:
        return MISSING
    text = f"{np.mean(values):.3f}" + (f" ± {_spread(values):.3f}" if len(values) > 1 else "")
    return text + (f" (n={len(values)})" if len(values) < seeds else "")


def metric_verdict(baseline: list[float], ablation: list[float], metric: str) -> str:
    """Whether one metric's difference says the baseline is better, worse, or cannot tell them apart.

    The difference must exceed the seeds' combined spread and a small absolute tolerance, so that
    neither seed noise nor a meaningless third decimal decides a claim."""
    if not baseline or not ablation:
        return UNMEASURED
    info = METRICS[metric]
    d = float(np.mean(ablation) - np.mean(baseline))
    d = -d if info.higher_is_better else d  # positive: the baseline is better
    margin = max(math.hypot(_spread(baseline), _spread(ablation)), info.tol)
    return SUPPORTS if d > margin else CONTRADICTS if d < -margin else NOISE


def claim_verdict(verdicts: list[str]) -> str:
    """A claim holds when some metric supports it and none contradicts it (and the reverse)."""
    measured = [v for v in verdicts if v != UNMEASURED]
    if not measured:
        return UNMEASURED
    if SUPPORTS in measured and CONTRADICTS not in measured:
        return HOLDS
    if CONTRADICTS in measured and SUPPORTS not in measured:
        return CONTRADICTED
    return UNRESOLVED


# ---------------------------------------------------------------------------------------------
# Markdown


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _setting(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _relative(path: Path, out_md: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_md.parent.resolve())).as_posix()


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def _describe(row: dict[str, Any]) -> str:
    """One line on a row: what it is, and what it cost a seed where that was recorded."""
    text = f"- **{row['label']}** (`{row['name']}`, {row['group']}): {row.get('what', '')}"
    seeds = _seeds(row)
    samples = sorted({s["summary"]["samples"] for s in seeds if _number((s.get("summary") or {}).get("samples"))})
    seconds = [s["seconds"] for s in seeds if _number(s.get("seconds"))]
    extra = [f"{len(seeds)} seeds"]
    if samples:
        extra.append(f"{samples[0] if len(samples) == 1 else f'{samples[0]}–{samples[-1]}'} samples scored a seed")
    if seconds:
        extra.append(f"{np.mean(seconds):.0f} s a seed")
    return text.rstrip() + f" ({', '.join(extra)})"


def _main_table(rows: list[dict[str, Any]]) -> list[str]:
    body, best = [], {}
    for metric in TABLE:
        info = METRICS[metric]
        means = [round(float(np.mean(v)), 3) for r in rows if r["group"] == "variant"
                 for v in [_values(r, metric)] if v]
        if len(means) >= 2 and min(means) != max(means):  # a tie among all variants names no best
            best[metric] = max(means) if info.higher_is_better else min(means)
    for row in rows:
        seeds = len(row.get("seeds", {}))
        cells = [_escape(row["label"]), row["group"], str(seeds)]
        for metric in TABLE:
            values = _values(row, metric)
            cell = _cell(values, seeds)
            is_best = (row["group"] == "variant" and values and metric in best
                       and round(float(np.mean(values)), 3) == best[metric])
            cells.append(f"**{cell}**" if is_best else cell)
        body.append(cells)
    return _table(["row", "group", "seeds", *(METRICS[m].header for m in TABLE)], body)


def _split_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for row in rows:
        train, test = _values(row, "adherence", "train"), _values(row, "adherence", "test")
        if train or test:
            seeds = len(row.get("seeds", {}))
            body.append([_escape(row["label"]), _cell(train, seeds), _cell(test, seeds)])
    if not body:
        return ["No run scored its samples per split, so there is no generalisation table."]
    return ["Adherence on prompts whose attribute pairs training saw (train) and on held-out pairs (test).", "",
            *_table(["row", "adherence, seen pairs (train)", "adherence, held-out pairs (test)"], body)]


def _claims(rows: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[str]:
    """The per-metric comparisons as a table, then one plain sentence per claim."""
    if not claims:
        return ["No claims were tested."]
    by_name = {row["name"]: row for row in rows}
    body, sentences, verdicts = [], [], []
    for claim in claims:
        base_row, abl_row = by_name.get(claim["baseline"]), by_name.get(claim["ablation"])
        per_metric, few_seeds = [], False
        for metric in claim["metrics"]:
            base, abl = _values(base_row, metric), _values(abl_row, metric)
            verdict = metric_verdict(base, abl, metric)
            per_metric.append(verdict)
            few_seeds |= verdict != UNMEASURED and min(len(base), len(abl)) < 2
            body.append([_escape(claim["claim"]), METRICS[metric].header, _cell(base, len(base)),
                         _cell(abl, len(abl)), verdict])
        verdict = claim_verdict(per_metric)
        verdicts.append(verdict)
        pair = f"`{claim['baseline']}` vs `{claim['ablation']}`"
        if verdict == UNMEASURED:
            missing = [n for n, r in ((claim["baseline"], base_row), (claim["ablation"], abl_row)) if r is None]
            why = f"no row {', '.join(f'`{n}`' for n in missing)}" if missing else "no values to compare"
            sentences.append(f"- {claim['claim']} ({pair}): **not measured** ({why}).")
            continue
        detail = ", ".join(f"{METRICS[m].header} {v}" for m, v in zip(claim["metrics"], per_metric))
        note = " (one seed: no spread measured)" if few_seeds else ""
        sentences.append(f"- {claim['claim']} ({pair}): **{verdict} at this scale**{note}: {detail}.")
    counts = {v: verdicts.count(v) for v in (HOLDS, CONTRADICTED, UNRESOLVED, UNMEASURED)}
    overview = (f"Of {len(claims)} claims, {counts[HOLDS]} hold, {counts[CONTRADICTED]} are contradicted, "
                f"{counts[UNRESOLVED]} are not resolved and {counts[UNMEASURED]} were not measured at this scale. "
                "A metric supports a claim when the baseline beats the ablation by more than the seeds' combined "
                "spread (and a small tolerance), and contradicts it when the ablation wins by as much.")
    return [overview, "", *_table(["claim", "metric", "baseline", "ablation", "verdict"], body), "", *sentences]


# ---------------------------------------------------------------------------------------------
# Figures


def _smoothed_loss(metrics: Path) -> dict[float, float]:
    """Step -> EMA of the loss, over the rows of a metrics.jsonl that have a numeric step and loss."""
    smoothed: dict[float, float] = {}
    value = None
    for line in metrics.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        loss, step = record.get("loss"), record.get("step")
        if _number(loss) and _number(step):
            value = loss if value is None else EMA * value + (1 - EMA) * loss
            smoothed[step] = value
    return smoothed


def _loss_band(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps every seed logged, and the mean, min and max over seeds of the smoothed loss there."""
    files = [Path(s["metrics"]) for s in _seeds(row) if s.get("metrics")]
    curves = [curve for f in files if f.is_file() and (curve := _smoothed_loss(f))]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        return None
    losses = np.array([[c[s] for s in steps] for c in curves])
    return np.array(steps), losses.mean(0), losses.min(0), losses.max(0)


def _plot_losses(rows: list[dict[str, Any]], out: Path) -> Path | None:
    bands = [(row["label"], band) for row in rows if (band := _loss_band(row)) is not None]
    if not bands:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label, (steps, mean, low, high) in bands:
        line, = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (EMA {EMA})")
    if all((band[2] > 0).all() for _, band in bands):  # a log axis cannot show a loss of 0 or below
        ax.set_yscale("log")
    ax.set_title("training loss, mean and min..max over seeds")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _sheet(row: dict[str, Any]) -> tuple[str, Path] | None:
    """The row's contact sheet of its lowest seed that has one (seed 0 first), and that seed."""
    seeds = row.get("seeds", {})
    for key in sorted(seeds, key=_seed_order):
        sheet = (seeds[key] or {}).get("sheet")
        if sheet and Path(sheet).is_file():
            return key, Path(sheet)
    return None


def _grid(rows: list[dict[str, Any]], out: Path) -> Path | None:
    """Every row's contact sheet at one width, stacked, each under its label."""
    sheets = [(f"{row['label']} (seed {seed})", Image.open(path).convert("RGB"))
              for row in rows if (found := _sheet(row)) is not None for seed, path in [found]]
    if not sheets:
        return None
    width = min(GRID_WIDTH, max(image.width for _, image in sheets))
    scaled = [(label, image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS))
              for label, image in sheets]
    grid = Image.new("RGB", (width, sum(LABEL_HEIGHT + image.height for _, image in scaled)), "white")
    draw, font, y = ImageDraw.Draw(grid), ImageFont.load_default(size=LABEL_SIZE), 0
    for label, image in scaled:
        draw.text((6, y + (LABEL_HEIGHT - LABEL_SIZE) // 2), label, fill="black", font=font)
        grid.paste(image, (0, y + LABEL_HEIGHT))
        y += LABEL_HEIGHT + image.height
    grid.save(out)
    return out
