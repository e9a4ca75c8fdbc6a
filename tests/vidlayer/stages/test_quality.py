import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.gate_calibration import GateModel
from vidlayer.motion import estimate_motion
from vidlayer.stages.quality import QualityGate, QualityParams, verdict
from vidlayer.synth import render_scene


@pytest.fixture(scope="module")
def scene():
    return render_scene(2, 0, width=256, height=144, fps=16, seconds=1.1, num_foregrounds=1)


def layered_clip(scene, **changes):
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=scene.full,
                alphas=scene.alphas.copy(), foregrounds=scene.foregrounds, background=scene.background,
                motion=estimate_motion(scene.full), metrics={"segment_confidence": 0.9})
    for name, value in changes.items():
        setattr(clip, name, value)
    return clip


def gate(**params):
    return QualityGate(QualityParams(**params))


def test_true_layers_pass_with_small_errors(scene):
    clip = gate().process(layered_clip(scene))
    assert clip.metrics["quality_composite_error"] < 0.002
    assert clip.metrics["quality_composite_error_fg"] < 0.005
    assert 0.005 < clip.metrics["quality_alpha_coverage"] < 0.5
    assert clip.metrics["quality_alpha_flicker"] < 0.15


def drop_reason(clip, **params):
    with pytest.raises(Drop) as drop:
        gate(**params).process(clip)
    return drop.value.reason


def test_a_wrong_background_fails_the_composite_check(scene):
    assert drop_reason(layered_clip(scene, background=255 - scene.background)) == "composite_error"


def test_a_wrong_foreground_fails_the_composite_check_even_when_small(scene):
    clip = layered_clip(scene, foregrounds=255 - scene.foregrounds)
    assert drop_reason(clip, max_composite_error=1.0) == "composite_error"


def test_coverage_bounds(scene):
    assert drop_reason(layered_clip(scene), min_coverage=0.9) == "coverage_too_low"
    assert drop_reason(layered_clip(scene), max_coverage=0.001) == "coverage_too_high"


def test_a_shimmering_matte_fails_the_flicker_check(scene):
    rng = np.random.default_rng(0)
    shimmer = scene.alphas * (rng.random(scene.alphas.shape[:2])[..., None, None] > 0.5)
    clip = layered_clip(scene, alphas=shimmer.astype(np.float32))
    assert drop_reason(clip, max_composite_error=1.0, max_composite_error_fg=1.0) == "alpha_flicker"


def test_a_background_that_still_shows_the_subject_is_dropped_for_low_confidence(scene, tmp_path):
    """The gate's calibrated model predicts J from signals; here one where a ghost means failure."""
    GateModel(["quality_ghost"], mean=[0.5], scale=[0.25], weights=[-5.0], bias=0.0).save(tmp_path / "gate.json")
    calibration = str(tmp_path / "gate.json")
    clean = gate(calibration=calibration).process(layered_clip(scene))
    assert clean.metrics["quality_confidence"] > 0.99
    ghosted = layered_clip(scene, background=scene.full)  # still adds up: the foreground covers the difference
    with pytest.raises(Drop) as drop:
        gate(calibration=calibration).process(ghosted)
    assert drop.value.reason == "low_confidence" and "quality_ghost 1" in str(drop.value)
    assert ghosted.metrics["quality_confidence"] < 0.01


def test_verdict_re_judges_recorded_metrics_with_other_thresholds(scene):
    metrics = gate(min_confidence=0).process(layered_clip(scene)).metrics
    assert verdict(metrics, QualityParams(min_confidence=0)) is None
    assert verdict(metrics, QualityParams(min_confidence=1.01))[0] == "low_confidence"
    assert verdict(metrics, QualityParams(min_confidence=0, max_flicker=0))[0] == "alpha_flicker"


def test_every_signal_the_shipped_model_reads_is_recorded(scene):
    metrics = gate(min_confidence=0).process(layered_clip(scene)).metrics
    assert set(GateModel.load().features) <= set(metrics)
