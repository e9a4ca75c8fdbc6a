import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.motion import estimate_motion
from vidlayer.stages.quality import QualityGate, QualityParams, alpha_flicker
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


def test_low_segmenter_confidence_is_dropped(scene):
    clip = layered_clip(scene)
    clip.metrics["segment_confidence"] = 0.1
    assert drop_reason(clip) == "low_confidence"


def test_flicker_follows_motion():
    """A disc sliding with the flow is stable; the same disc blinking is not."""
    flow = np.zeros((3, 32, 48, 2), np.float32)
    flow[..., 0] = 2.0  # everything moves 2 px right per frame
    ys, xs = np.mgrid[:32, :48]
    sliding = np.stack([((xs - 10 - 2 * t) ** 2 + (ys - 16) ** 2 < 36).astype(np.float32) for t in range(4)])
    blinking = sliding * np.array([1, 0, 1, 0], np.float32)[:, None, None]
    assert alpha_flicker(sliding, flow) < 0.1 < alpha_flicker(blinking, flow)
