import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.clip import Captions, Clip
from vidlayer.stages.foreground import UnmixForeground, UnmixForegroundParams
from vidlayer.layers import composite
from vidlayer.quality_signals import composite_errors
from vidlayer.synth import render_scene

H, W, T = 96, 160, 9
YELLOW, BLUE = np.array([240.0, 200, 30]), np.array([40.0, 60, 220])


def backdrop() -> np.ndarray:
    return cv2.resize(skimage.data.coffee(), (W, H), interpolation=cv2.INTER_AREA)


def soft_disc(cx: float, cy: float, radius: float, feather: float = 4.0) -> np.ndarray:
    ys, xs = np.mgrid[:H, :W]
    return np.clip((radius - np.hypot(xs - cx, ys - cy)) / feather + 0.5, 0, 1).astype(np.float32)


def two_discs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Yellow over blue over a photo, overlapping and moving: colours [2, T, H, W, 3], alphas [2, T, H, W], backdrop."""
    alphas = np.stack([[soft_disc(60 + 2 * t, 48, 22), soft_disc(90 + 2 * t, 50, 24)] for t in range(T)], axis=1)
    colours = np.broadcast_to(np.stack([YELLOW, BLUE])[:, None, None, None], (2, T, H, W, 3))
    background = np.repeat(backdrop()[None], T, axis=0)
    return colours, alphas, background


def unmix(frames: np.ndarray, alphas: np.ndarray, background: np.ndarray) -> np.ndarray:
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, alphas=alphas,
                background=background)
    stage = UnmixForeground(UnmixForegroundParams())
    stage.setup()
    stage.process(clip)
    assert clip.foregrounds.shape == (*alphas.shape, 3) and clip.foregrounds.dtype == np.uint8
    return clip.foregrounds


def test_layers_recomposite_to_the_video_and_keep_their_colours():
    colours, alphas, background = two_discs()
    frames = np.rint(composite(colours, alphas, background)).astype(np.uint8)
    foregrounds = unmix(frames, alphas, background)
    assert composite_errors(frames, foregrounds, alphas, background)[1] < 0.002
    for k, colour in enumerate((YELLOW, BLUE)):
        seen = alphas[k] > 0.5
        assert np.abs(foregrounds[k][seen] - colour).max() <= 2
    # Where layer 0 half covers layer 1, both are still told apart.
    both = (alphas[0] > 0.3) & (alphas[0] < 0.7) & (alphas[1] > 0.9)
    assert both.any() and np.abs(foregrounds[1][both] - BLUE).max() <= 3


def test_outside_the_matte_the_colour_is_extended_not_black():
    colours, alphas, background = two_discs()
    frames = np.rint(composite(colours, alphas, background)).astype(np.uint8)
    foregrounds = unmix(frames, alphas, background)
    for k, colour in enumerate((YELLOW, BLUE)):
        assert np.abs(foregrounds[k][alphas[k] == 0] - colour).max() <= 2


def test_faint_coverage_does_not_amplify_noise():
    colours, alphas, background = two_discs()
    rng = np.random.default_rng(0)
    noisy = composite(colours, alphas, background) + rng.normal(0, 4, background.shape)
    frames = np.clip(noisy, 0, 255).astype(np.uint8)
    foregrounds = unmix(frames, alphas, background)
    faint = (alphas[0] > 0.02) & (alphas[0] < 0.3)
    # What solving the compositing equation alone would give: the noise divided by the coverage.
    a = alphas[0][faint][:, None]
    solved = (frames[faint] - (1 - a) * composite(colours[1:], alphas[1:], background)[faint]) / a
    assert np.abs(foregrounds[0][faint] - YELLOW).mean() < 0.5 * np.abs(solved - YELLOW).mean()
    assert np.abs(foregrounds[0][faint] - YELLOW).mean() < 12


def test_frames_without_the_layer_borrow_its_nearest_colours():
    colours, alphas, background = two_discs()
    alphas[1, 3:5] = 0
    frames = np.rint(composite(colours, alphas, background)).astype(np.uint8)
    foregrounds = unmix(frames, alphas, background)
    assert np.array_equal(foregrounds[1, 3], foregrounds[1, 2]) and np.array_equal(foregrounds[1, 4], foregrounds[1, 5])


@pytest.mark.parametrize("index", [2, 3])
def test_rendered_scenes_unmix_to_their_true_colours(index):
    scene = render_scene(0, index, width=256, height=144, fps=16.0, seconds=1.0)
    foregrounds = unmix(scene.full, scene.alphas, scene.background)
    assert composite_errors(scene.full, foregrounds, scene.alphas, scene.background)[1] < 0.003
    opaque = scene.alphas > 0.5
    assert np.abs(foregrounds.astype(float) - scene.foregrounds)[opaque].mean() < 1.5
    assert (foregrounds.max(axis=-1) > 10)[scene.alphas == 0].mean() > 0.98, "no black fill"
