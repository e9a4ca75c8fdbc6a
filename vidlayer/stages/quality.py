"""The quality gate: measure the decomposition, drop clips whose layers would teach the wrong thing.

Hard checks catch what is plainly broken:
- composite error: mean |full - over(foregrounds, alphas, background)| (0..1), over the whole
  frame and over the pixels a foreground touches; the layers must add back up to the video.
- alpha coverage: a sliver or a wall-to-wall matte means no real subject was found.
- alpha flicker: frame-to-frame change of the matte after following the motion.

What they cannot see is a clean decomposition of the wrong thing: a patch of terrain taken for
the subject, a matte that misses half of it, a background that still shows it. For that the gate
measures signals that need no ground truth (`vidlayer.quality_signals`) and turns them into
`quality_confidence`, the J a clip's layers are expected to score, with a logistic model
calibrated on synthetic clips whose true layers are known (`vidlayer.gate_calibration`,
refitted by `bench/calibrate_gate.py`). Clips below `min_confidence` are dropped. Every signal
goes into the manifest, so a dataset can be re-thresholded without rebuilding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from vidlayer.clip import Clip, Drop
from vidlayer.gate_calibration import GateModel
from vidlayer.quality_signals import measure
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class QualityParams:
    max_composite_error: float = 0.01  # whole frame
    max_composite_error_fg: float = 0.03  # pixels with a foreground
    min_coverage: float = 0.005
    max_coverage: float = 0.85
    max_flicker: float = 0.25
    min_confidence: float = 0.6  # expected J below which a clip is dropped (see quality_confidence)
    calibration: str = ""  # JSON file of a gate model (bench/calibrate_gate.py --out); empty: the shipped one


@register
class QualityGate(Stage):
    stage = "quality"
    backend = "default"
    Params = QualityParams
    default_resources = Resources(cpus=1)

    @cached_property
    def model(self) -> GateModel:
        return GateModel.load(self.params.calibration or None)

    def process(self, clip: Clip) -> Clip:
        clip.metrics.update(measure(clip))
        clip.metrics["quality_confidence"] = self.model.predict(clip.metrics)
        failure = verdict(clip.metrics, self.params)
        if failure:
            reason, message = failure
            if reason == "low_confidence":
                message += f" ({self.model.explain(clip.metrics)})"
            raise Drop(reason, message)
        return clip


def verdict(metrics: dict[str, float], p: QualityParams) -> tuple[str, str] | None:
    """(reason, message) of the first check a clip's metrics fail, or None when it passes.

    A function of the recorded metrics alone, so a built dataset can be re-judged with other
    thresholds without rebuilding (`bench/bench_quality.py` does).
    """
    whole, fg = metrics["quality_composite_error"], metrics["quality_composite_error_fg"]
    coverage, flicker = metrics["quality_alpha_coverage"], metrics["quality_alpha_flicker"]
    confidence = metrics["quality_confidence"]
    checks = [
        (whole > p.max_composite_error, "composite_error",
         f"layers recomposite with error {whole:.4f} > {p.max_composite_error} over the frame"),
        (fg > p.max_composite_error_fg, "composite_error",
         f"layers recomposite with error {fg:.4f} > {p.max_composite_error_fg} where a foreground is"),
        (coverage < p.min_coverage, "coverage_too_low", f"foreground covers {coverage:.4f} of the frame < {p.min_coverage}"),
        (coverage > p.max_coverage, "coverage_too_high", f"foreground covers {coverage:.3f} of the frame > {p.max_coverage}"),
        (flicker > p.max_flicker, "alpha_flicker", f"alpha changes {flicker:.3f} per frame after motion > {p.max_flicker}"),
        (confidence < p.min_confidence, "low_confidence",
         f"expected J of the layers {confidence:.3f} < {p.min_confidence}"),
    ]
    return next(((reason, message) for failed, reason, message in checks if failed), None)
