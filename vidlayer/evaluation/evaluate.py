"""`vidlayer eval`: score the samples of a build against ground truth, clip by clip.

Samples are matched to ground truth by their source video's name (`gt/NAME` for `NAME.mp4`).
A clip the build dropped or failed, or never saw, gets a row with the reason and counts as
J = F = 0 in the "all clips" means, so a pipeline cannot look better by dropping hard clips;
the means over scored samples are reported beside them.

Segmentation is scored on the union of the foreground layers (DAVIS 2016 is single-object)
and per instance, each true layer matched to a predicted one. Mattes are compared as the
union's coverage 1 - prod(1 - a_k), which does not depend on how instances were split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from vidlayer.build import SHARDS_DIR
from vidlayer.io.manifest import manifest_files, read_manifest
from vidlayer.io.shards import decode_layers, layer_members, read_shard
from vidlayer.evaluation.metrics import (alpha_errors, boundary_accuracy, composite_error, masked_psnr, masked_ssim,
                                         match_layers, region_similarity)
from vidlayer.evaluation.truth import Truth, load_truth, truth_folders
from vidlayer.layers import total_coverage

SUMMARY_METRICS = ("J", "F", "J_instances", "alpha_mse", "alpha_sad", "alpha_gradient", "alpha_dtssd",
                   "bg_psnr_covered", "bg_ssim_covered", "bg_psnr_visible", "bg_ssim_visible", "fg_psnr",
                   "composite_error", "confidence")


@dataclass
class Prediction:
    """A built sample decoded: layer 0 on top."""

    key: str
    meta: dict[str, Any]
    full: np.ndarray  # [T, H, W, 3] uint8
    background: np.ndarray
    foregrounds: np.ndarray  # [K, T, H, W, 3]
    alphas: np.ndarray  # [K, T, H, W] float32

    @classmethod
    def from_sample(cls, sample: dict[str, Any]) -> Prediction:
        meta = sample["json"]
        videos = decode_layers({role: sample[member] for role, member in layer_members(meta, sample).items()})
        k = len(meta["layers"]["foreground"])
        return cls(sample["__key__"], meta, videos["full"], videos["background"],
                   np.stack([videos[f"fg{i}"] for i in range(k)]),
                   np.stack([videos[f"alpha{i}"].astype(np.float32) / 255 for i in range(k)]))

    def truth(self, folder: Path) -> Truth:
        """The ground truth in `folder` at this sample's source frames and size."""
        if self.meta.get("source_frames") is None:
            raise ValueError(f"sample {self.key} does not record its source frames; rebuild it with this version")
        height, width = self.full.shape[1:3]
        return load_truth(folder, np.asarray(self.meta["source_frames"]), (width, height))


def clip_name(meta: dict[str, Any]) -> str:
    """The ground-truth folder a sample or manifest row belongs to: its source video's name."""
    return Path(meta["source"]).stem


def built_samples(pred_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every sample in a build's shards, undecoded."""
    for shard in sorted((Path(pred_dir) / SHARDS_DIR).rglob("shard-*.tar")):
        yield from read_shard(shard)


@dataclass
class Evaluation:
    """Per-sample rows (dropped and missing clips included) and their means."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scored(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "scored"]

    def summary(self) -> dict[str, Any]:
        scored = self.scored
        means = {name: finite_mean([r.get(name) for r in scored]) for name in SUMMARY_METRICS}
        clips = {r["clip"] for r in self.rows}
        # Every clip counts: one without a scored sample is a miss (0).
        per_clip = {c: [r for r in scored if r["clip"] == c] for c in clips}
        return {
            "clips": len(clips),
            "samples_scored": len(scored),
            "clips_unscored": sorted(c for c, rows in per_clip.items() if not rows),
            "J_all_clips": finite_mean([finite_mean([r["J"] for r in rows]) if rows else 0.0 for rows in per_clip.values()]),
            "F_all_clips": finite_mean([finite_mean([r["F"] for r in rows]) if rows else 0.0 for rows in per_clip.values()]),
            **means,
            "confidence_vs_J": rank_correlation([r.get("confidence") for r in scored], [r["J"] for r in scored]),
        }


def evaluate(pred_dir: str | Path, gt_dir: str | Path,
             on_sample: Callable[[dict[str, Any]], None] | None = None) -> Evaluation:
    """Score every sample of the build in `pred_dir` against the truth in `gt_dir`."""
    pred_dir = Path(pred_dir)
    folders = truth_folders(gt_dir)
    if not any((pred_dir / SHARDS_DIR).rglob("shard-*.tar")) and not manifest_files(pred_dir):
        raise FileNotFoundError(f"{pred_dir} is not a build output (no {SHARDS_DIR}/ shards, no manifest.parquet)")
    evaluation = Evaluation()
    seen: set[str] = set()
    for sample in built_samples(pred_dir):
        name = clip_name(sample["json"])
        if name not in folders:
            continue
        seen.add(name)
        row = score(Prediction.from_sample(sample), folders[name])
        evaluation.rows.append(row)
        if on_sample:
            on_sample(row)
    unmatched = set(folders) - seen
    for entry in read_manifest(pred_dir):
        name = clip_name(entry)
        if entry["kind"] == "input" and name in unmatched and entry["status"] != "written":
            evaluation.rows.append({"clip": name, "sample": entry["key"], "status": entry["status"],
                                    "reason": f"{entry['stage']}: {entry['reason']}: {entry['message']}"})
            unmatched.discard(name)
    evaluation.rows += [{"clip": name, "sample": None, "status": "missing", "reason": "not in the build"}
                        for name in sorted(unmatched)]
    return evaluation


def score(pred: Prediction, folder: Path) -> dict[str, Any]:
    """All metrics of one sample that its truth allows."""
    truth = pred.truth(folder)
    pred_masks = pred.alphas > 0.5
    union, true_union = pred_masks.any(axis=0), truth.masks.any(axis=0)
    row: dict[str, Any] = {
        "clip": truth.name, "sample": pred.key, "status": "scored",
        "layers": len(pred.alphas), "true_layers": len(truth.masks),
        "J": float(region_similarity(union, true_union).mean()),
        "F": float(boundary_accuracy(union, true_union).mean()),
        "J_instances": _instance_similarity(pred_masks, truth.masks),
        "composite_error": composite_error(pred.full, pred.foregrounds, pred.alphas, pred.background),
        "confidence": pred.meta.get("metrics", {}).get("quality_confidence"),
    }
    if truth.has_layers:
        row |= _layer_scores(pred, truth)
    return row


def _layer_scores(pred: Prediction, truth: Truth) -> dict[str, float]:
    coverage, true_coverage = total_coverage(pred.alphas), total_coverage(truth.alphas)
    alpha = alpha_errors(coverage, true_coverage)
    covered = true_coverage > 0  # where the background was hidden, at least in part, and had to be inpainted
    pairs = match_layers(pred.alphas > 0.5, truth.masks)
    fg = [masked_psnr(pred.foregrounds[p], truth.foregrounds[t], truth.alphas[t] > 0) for p, t in pairs]
    return {
        **{f"alpha_{name}": value for name, value in alpha.items()},
        "bg_psnr_covered": masked_psnr(pred.background, truth.background, covered),
        "bg_ssim_covered": masked_ssim(pred.background, truth.background, covered),
        "bg_psnr_visible": masked_psnr(pred.background, truth.background, ~covered),
        "bg_ssim_visible": masked_ssim(pred.background, truth.background, ~covered),
        "fg_psnr": finite_mean(fg),
    }


def _instance_similarity(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean J over true layers, each against its matched predicted layer (0 if none)."""
    if not len(truth):
        return float(not pred.any())
    matched = dict((t, p) for p, t in match_layers(pred, truth))
    return float(np.mean([region_similarity(pred[matched[t]], truth[t]).mean() if t in matched else 0.0
                          for t in range(len(truth))]))


def finite_mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are given and finite; None when there are none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def rank_correlation(x: list[float | None], y: list[float]) -> float | None:
    """Spearman's rho: does a higher confidence (the quality gate's expected J) mean a better J?"""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr(*zip(*pairs)).statistic)
