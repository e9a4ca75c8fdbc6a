"""The quality gate: measure the decomposition, drop clips whose layers would teach the wrong thing.

- composite error: mean |full - over(foregrounds, alphas, background)| (0..1), over the whole
  frame and over the pixels a foreground touches (where the whole-frame mean would dilute an
  error); the layers must add back up to the video they came from.
- alpha coverage: mean share of the frame the foregrounds cover; a sliver or a wall-to-wall
  matte means the segmenter found no real subject.
- alpha flicker: frame-to-frame change of the matte after following the motion, relative to
  the matte's size; a stable subject should not shimmer.
- segmenter confidence, as the segment stage reported it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidlayer.clip import Clip, Drop
from vidlayer.layers import recomposite_error
from vidlayer.motion import backward_warp, motion_of
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class QualityParams:
    max_composite_error: float = 0.01  # whole frame
    max_composite_error_fg: float = 0.03  # pixels with a foreground
    min_coverage: float = 0.005
    max_coverage: float = 0.85
    max_flicker: float = 0.25
    min_confidence: float = 0.3


@register
class QualityGate(Stage):
    stage = "quality"
    backend = "default"
    Params = QualityParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: QualityParams = self.params
        whole, fg = composite_errors(clip.frames, clip.foregrounds, clip.alphas, clip.background)
        metrics = {
            "quality_composite_error": whole,
            "quality_composite_error_fg": fg,
            "quality_alpha_coverage": float(clip.alphas.sum(axis=0).mean()),
            "quality_alpha_flicker": alpha_flicker(clip.alphas.sum(axis=0), motion_of(clip).flow),
        }
        clip.metrics.update(metrics)
        confidence = clip.metrics.get("segment_confidence", 1.0)
        checks = [
            (whole > p.max_composite_error, "composite_error",
             f"layers recomposite with error {whole:.4f} > {p.max_composite_error} over the frame"),
            (fg > p.max_composite_error_fg, "composite_error",
             f"layers recomposite with error {fg:.4f} > {p.max_composite_error_fg} where a foreground is"),
            (metrics["quality_alpha_coverage"] < p.min_coverage, "coverage_too_low",
             f"foreground covers {metrics['quality_alpha_coverage']:.4f} of the frame < {p.min_coverage}"),
            (metrics["quality_alpha_coverage"] > p.max_coverage, "coverage_too_high",
             f"foreground covers {metrics['quality_alpha_coverage']:.3f} of the frame > {p.max_coverage}"),
            (metrics["quality_alpha_flicker"] > p.max_flicker, "alpha_flicker",
             f"alpha changes {metrics['quality_alpha_flicker']:.3f} per frame after motion > {p.max_flicker}"),
            (confidence < p.min_confidence, "low_confidence",
             f"segmenter confidence {confidence:.3f} < {p.min_confidence}"),
        ]
        for failed, reason, message in checks:
            if failed:
                raise Drop(reason, message)
        return clip


def composite_errors(full: np.ndarray, foregrounds: np.ndarray, alphas: np.ndarray,
                     background: np.ndarray) -> tuple[float, float]:
    """Mean absolute recomposite error (0..1) over the frame and over the pixels a foreground touches."""
    error = recomposite_error(full, foregrounds, alphas, background)
    region = alphas.max(axis=0) > 1e-3
    return float(error.mean()), float(error[region].mean()) if region.any() else 0.0


def alpha_flicker(alpha: np.ndarray, flow: np.ndarray) -> float:
    """Mean |a_t - a_{t+1} warped back to t| relative to the mean matte, at the flow's resolution."""
    h, w = flow.shape[1:3]
    small = np.stack([cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) for a in alpha])
    changes, sizes = [], []
    for t in range(len(flow)):
        predicted = backward_warp(small[t + 1], flow[t])
        changes.append(np.abs(small[t] - predicted).mean())
        sizes.append(small[t].mean())
    return float(np.mean(changes) / max(np.mean(sizes), 1e-6))
