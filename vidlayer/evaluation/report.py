"""The evaluation report: means, a row per clip, and pictures of the worst clips.

Written as Markdown or HTML (by the file's suffix), with the pictures as PNGs in a folder
beside it. A picture shows, across time, the frame with the true outline (green) and the
predicted one (red), then true and predicted mattes and backgrounds where the truth has them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidlayer.evaluation.evaluate import SUMMARY_METRICS, Evaluation, Prediction, built_samples, clip_name
from vidlayer.evaluation.truth import Truth, truth_folders
from vidlayer.layers import total_coverage
from vidlayer.render import contact_sheet, grey_to_rgb, save_png

CLIP_COLUMNS = ("J", "F", "J_instances", "alpha_mse", "bg_psnr_covered", "fg_psnr", "composite_error", "confidence")
TRUE, PREDICTED = (40, 220, 40), (235, 40, 40)

Block = tuple[str, Any]  # ("heading" | "text" | "table" | "image", content)


def write_report(evaluation: Evaluation, pred_dir: str | Path, gt_dir: str | Path, path: str | Path,
                 title: str = "Layer extraction against ground truth", worst: int = 3) -> Path:
    """Write the report to `path` (.md or .html); returns it."""
    path = Path(path)
    if path.suffix not in (".md", ".html"):
        raise ValueError(f"the report must be .md or .html, not {path.name}")
    images = path.with_name(f"{path.stem}_images")
    summary = evaluation.summary()
    blocks: list[Block] = [
        ("heading", title),
        ("text", f"{summary['clips']} clips, {summary['samples_scored']} samples scored. "
                 f"J and F over all clips count a clip without a scored sample as 0."),
        ("table", [["metric", "mean"]] + [[k, _format(summary[k])] for k in
                                          ("J_all_clips", "F_all_clips", *SUMMARY_METRICS, "confidence_vs_J")]),
        ("heading", "Clips"),
        ("table", [["clip", "status", *CLIP_COLUMNS, "reason"]] + [
            [r["clip"], r["status"], *(_format(r.get(c)) for c in CLIP_COLUMNS), r.get("reason", "")]
            for r in evaluation.rows]),
    ]
    ranked = sorted(evaluation.scored, key=lambda r: r["J"])[:worst]
    if ranked:
        blocks.append(("heading", f"The {len(ranked)} clips with the lowest J"))
    folders = truth_folders(gt_dir)
    for row, (prediction, truth) in zip(ranked, _reload(pred_dir, folders, [r["sample"] for r in ranked])):
        picture = save_png(comparison_sheet(prediction, truth), images / f"{row['sample']}.png")
        blocks += [("text", f"{row['clip']}: J {row['J']:.3f}, F {row['F']:.3f}"),
                   ("image", picture.relative_to(path.parent).as_posix())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_html(blocks, title) if path.suffix == ".html" else _markdown(blocks))
    return path


def comparison_sheet(pred: Prediction, truth: Truth):
    """Prediction against truth across time (a PIL image)."""
    union = pred.alphas.max(axis=0, initial=0) > 0.5
    true_union = truth.masks.any(axis=0)
    outlined = np.stack([_outline(_outline(frame, t, TRUE), p, PREDICTED)
                         for frame, t, p in zip(pred.full, true_union, union)])
    rows = [("truth / predicted", outlined)]
    if truth.has_layers:
        true_coverage = total_coverage(truth.alphas)
        rows += [("true alpha", grey_to_rgb(true_coverage)), ("alpha", grey_to_rgb(total_coverage(pred.alphas))),
                 ("true background", truth.background), ("background", pred.background)]
    else:
        rows += [("true mask", grey_to_rgb(true_union.astype(np.float32))),
                 ("mask", grey_to_rgb(union.astype(np.float32))), ("background", pred.background)]
    return contact_sheet(rows, columns=6)


def _outline(frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(np.ascontiguousarray(frame), contours, -1, colour, max(1, frame.shape[0] // 160))


def _reload(pred_dir: str | Path, folders: dict[str, Path], keys: list[str]):
    """(prediction, truth) of the given samples, in the given order."""
    found = {s["__key__"]: Prediction.from_sample(s) for s in built_samples(pred_dir) if s["__key__"] in keys}
    for key in keys:
        yield found[key], found[key].truth(folders[clip_name(found[key].meta)])


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _markdown(blocks: list[Block]) -> str:
    lines = []
    for kind, content in blocks:
        if kind == "heading":
            lines += [f"{'#' if not lines else '##'} {content}", ""]
        elif kind == "text":
            lines += [content, ""]
        elif kind == "table":
            head, *body = content
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in body] + [""]
        else:
            lines += [f"![{content}]({content})", ""]
    return "\n".join(lines)


def _html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style>"]
    for index, (kind, content) in enumerate(blocks):
        if kind == "heading":
            level = 1 if index == 0 else 2
            parts.append(f"<h{level}>{html.escape(content)}</h{level}>")
        elif kind == "text":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            head, *body = content
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body]
            parts.append("</table>")
        else:
            parts.append(f"<img src='{html.escape(content)}'>")
    return "\n".join(parts) + "\n"
