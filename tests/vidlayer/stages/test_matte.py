import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.clip import Captions, Clip
from vidlayer.stages.matte import GuidedMatte, GuidedMatteParams, guided_filter
from vidlayer.synth import render_scene

H, W, T = 96, 160, 9


def picture(name: str) -> np.ndarray:
    return cv2.resize(getattr(skimage.data, name)(), (W, H), interpolation=cv2.INTER_AREA).astype(np.float32)


def soft_disc(cx: float, cy: float, radius: float, feather: float = 3.0) -> np.ndarray:
    ys, xs = np.mgrid[:H, :W]
    return np.clip((radius - np.hypot(xs - cx, ys - cy)) / feather + 0.5, 0, 1).astype(np.float32)


def over(alpha: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return alpha[..., None] * fg + (1 - alpha[..., None]) * bg


def matte(frames: np.ndarray, masks: np.ndarray, **params) -> np.ndarray:
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, masks=masks)
    stage = GuidedMatte(GuidedMatteParams(**params))
    stage.setup()
    stage.process(clip)
    assert clip.motion is not None, "motion is estimated when no earlier stage gave it"
    assert clip.alphas.shape == masks.shape and clip.alphas.dtype == np.float32
    assert 0 <= clip.alphas.min() and clip.alphas.max() <= 1
    return clip.alphas


def edge_region(alpha: np.ndarray) -> np.ndarray:
    """Pixels within 3 of the soft part of a ground-truth matte [..., H, W]."""
    soft = ((alpha > 0) & (alpha < 1)).reshape(-1, *alpha.shape[-2:]).astype(np.uint8)
    return np.stack([cv2.dilate(s, np.ones((7, 7), np.uint8)) > 0 for s in soft]).reshape(alpha.shape)


def test_guided_filter_recovers_the_ramp_between_two_colours():
    alpha = soft_disc(80, 48, 30, feather=4)
    image = over(alpha, np.array([230.0, 60, 40]), np.array([30.0, 90, 200])) / 255
    # Windows wide against the ramp see both pure colours, so the fit of the binary mask is the ramp itself.
    soft = guided_filter(image.astype(np.float32), (alpha > 0.5).astype(np.float32), radius=8, eps=1e-4)
    ramp = (alpha > 0) & (alpha < 1)
    assert np.abs(soft - alpha)[ramp].mean() < 0.03 and np.abs(soft - alpha)[ramp].max() < 0.08


def test_matte_is_soft_at_the_edge_solid_inside_and_clear_outside():
    fg, bg = picture("chelsea"), picture("coffee")
    truth = np.stack([soft_disc(60 + 2 * t, 48, 26) for t in range(T)])
    frames = np.rint(over(truth, fg, bg)).astype(np.uint8)
    alphas = matte(frames, (truth > 0.5)[None])[0]
    inside = np.stack([cv2.erode((a == 1).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for a in truth])
    outside = np.stack([cv2.dilate((a > 0).astype(np.uint8), np.ones((21, 21), np.uint8)) == 0 for a in truth])
    assert alphas[inside].min() > 0.98
    assert alphas[outside].max() == 0
    ramp = (truth > 0) & (truth < 1)
    assert ((alphas[ramp] > 0.05) & (alphas[ramp] < 0.95)).mean() > 0.5, "the edge is soft, not binary"
    edge = edge_region(truth)
    binary_error = (((truth > 0.5) - truth) ** 2)[edge].mean()
    assert ((alphas - truth) ** 2)[edge].mean() < binary_error / 3
    assert ((alphas - truth) ** 2).mean() < 0.005


@pytest.mark.parametrize("index", [2, 5, 7])
def test_matte_is_close_to_ground_truth_on_rendered_scenes(index):
    scene = render_scene(0, index, width=256, height=144, fps=16.0, seconds=1.0)
    alphas = matte(scene.full, scene.alphas > 0.5)
    assert ((alphas - scene.alphas) ** 2).mean() < 0.005
    edge = edge_region(scene.alphas)
    binary_error = (((scene.alphas > 0.5) - scene.alphas) ** 2)[edge].mean()
    assert ((alphas - scene.alphas) ** 2)[edge].mean() < 0.6 * binary_error


def test_a_static_soft_edge_does_not_flicker_when_the_mask_jitters():
    rng = np.random.default_rng(0)
    truth = soft_disc(80, 48, 28)
    frames = np.stack([np.clip(over(truth, picture("chelsea"), picture("coffee")) + rng.normal(0, 2, (H, W, 3)), 0, 255)
                       for _ in range(T)]).astype(np.uint8)
    masks = np.stack([np.roll(truth > 0.5, tuple(rng.integers(-1, 2, 2)), axis=(0, 1)) for _ in range(T)])[None]
    edge = edge_region(truth)

    def flicker(alphas: np.ndarray) -> float:
        return float(np.abs(np.diff(alphas[0], axis=0)).mean(axis=0)[edge].mean())

    stable, unstable = flicker(matte(frames, masks)), flicker(matte(frames, masks, temporal=0.0))
    assert stable < 0.75 * unstable
    assert stable < 0.75 * flicker(masks.astype(np.float32))


def test_two_layers_never_count_a_pixel_twice():
    top, bottom = soft_disc(70, 48, 24), soft_disc(100, 48, 24)
    frame = over(top, np.array([240.0, 200, 30]), over(bottom, np.array([40.0, 40, 220]), picture("coffee")))
    frames = np.repeat(np.rint(frame).astype(np.uint8)[None], T, axis=0)
    # Overlapping masks, as a segmenter that does not separate layers would give.
    masks = np.stack([np.repeat(m[None], T, axis=0) for m in (top > 0.5, bottom > 0.5)])
    alphas = matte(frames, masks)
    assert alphas.sum(axis=0).max() <= 1 + 1e-6
    covered = np.repeat((top == 1)[None], T, axis=0)
    assert alphas[0][covered].min() > 0.98 and alphas[1][covered].max() < 0.02, "layer 0 is on top"
    assert alphas[1][np.repeat((bottom == 1)[None] & (top == 0)[None], T, axis=0)].min() > 0.98
