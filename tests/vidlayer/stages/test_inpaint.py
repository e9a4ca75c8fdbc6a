import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.clip import Captions, Clip, Motion
from vidlayer.stages.inpaint import PropagateInpaint, PropagateInpaintParams
from vidlayer.synth import render_scene

H, W, T = 96, 160, 13
PAN = 3  # pixels per frame


def panning_scene(pan: int = PAN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo panning under a disc fixed on screen: frames, alphas [1, T, H, W] and the true background."""
    canvas = cv2.resize(skimage.data.astronaut(), (W + pan * T, H), interpolation=cv2.INTER_AREA)
    background = np.stack([canvas[:, pan * t: pan * t + W] for t in range(T)])
    ys, xs = np.mgrid[:H, :W]
    alpha = np.clip(12 - np.hypot(xs - 80, ys - 48), 0, 1).astype(np.float32)
    alphas = np.repeat(alpha[None, None], T, axis=1)
    frames = np.rint(alphas[0, ..., None] * [255.0, 0, 255] + (1 - alphas[0, ..., None]) * background).astype(np.uint8)
    return frames, alphas, background


def inpaint(frames: np.ndarray, alphas: np.ndarray, motion: Motion | None = None, **params) -> Clip:
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, alphas=alphas,
                motion=motion)
    stage = PropagateInpaint(PropagateInpaintParams(**params))
    stage.setup()
    stage.process(clip)
    assert clip.background.shape == frames.shape and clip.background.dtype == np.uint8
    return clip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(((a.astype(np.float64) - b) ** 2).mean(), 1e-10)))


def test_far_from_the_foreground_the_background_is_the_frame():
    frames, alphas, _ = panning_scene()
    clip = inpaint(frames, alphas)
    far = cv2.dilate((alphas[0, 0] > 0).astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert np.array_equal(clip.background[:, far], frames[:, far])


def test_a_panning_camera_reveals_the_true_background():
    frames, alphas, truth = panning_scene()
    clip = inpaint(frames, alphas)
    assert clip.motion is not None, "motion is estimated when no earlier stage gave it"
    hole = alphas[0] > 0
    assert clip.metrics["inpaint_seen_fraction"] == 1.0
    assert psnr(clip.background[hole], truth[hole]) > 35
    magenta = (clip.background[..., 0] > 200) & (clip.background[..., 1] < 50) & (clip.background[..., 2] > 200)
    assert not magenta[hole].any(), "no foreground colour is left in the hole"


def test_refinement_undoes_drift_in_the_camera_motion():
    frames, alphas, truth = panning_scene()
    # The flow's homographies, each a quarter pixel off: chained over 8 frames that is 2 pixels.
    drifting = np.stack([np.array([[1.0, 0, -PAN + 0.25], [0, 1, 0], [0, 0, 1]])] * (T - 1))
    motion = Motion(scale=1.0, flow=np.zeros((T - 1, H, W, 2), np.float32), homographies=drifting)
    hole = alphas[0] > 0
    refined = inpaint(frames, alphas, motion).background
    unrefined = inpaint(frames, alphas, motion, refine_iterations=0).background
    assert psnr(refined[hole], truth[hole]) > psnr(unrefined[hole], truth[hole]) + 3
    assert psnr(refined[hole], truth[hole]) > 35


def test_what_no_frame_saw_is_inpainted_from_around_it():
    # Still camera, still subject: the hole is never seen, so it is filled spatially.
    ys, xs = np.mgrid[:H, :W]
    gradient = np.stack([xs * 1.2, ys * 2.0, np.full((H, W), 90.0)], axis=-1)
    frames, alphas, _ = panning_scene(pan=0)
    frames = np.rint(alphas[0, ..., None] * [255.0, 0, 255] + (1 - alphas[0, ..., None]) * gradient).astype(np.uint8)
    clip = inpaint(frames, alphas)
    hole = alphas[0, 0] > 0
    assert clip.metrics["inpaint_seen_fraction"] == 0.0
    assert np.abs(clip.background[:, hole].astype(float) - gradient[hole]).mean() < 8


@pytest.mark.parametrize("index", [1, 3])
def test_rendered_scenes_get_their_background_back(index):
    scene = render_scene(0, index, width=256, height=144, fps=16.0, seconds=1.0)
    clip = inpaint(scene.full, scene.alphas)
    covered = scene.alphas.sum(axis=0) > 0
    assert clip.metrics["inpaint_seen_fraction"] > 0.95
    assert psnr(clip.background[covered], scene.background[covered]) > 32


def test_views_where_the_matte_missed_the_subject_are_outvoted():
    """The matte misses the disc in the two frames next to frame 6: nearest-first copies the
    disc's colour into frame 6's hole from them; the vote of several views does not."""
    frames, alphas, truth = panning_scene()
    missed = alphas.copy()
    missed[0, [5, 7]] = 0
    target = alphas[0, 6] > 0
    nearest = inpaint(frames, missed, votes=1).background[6]
    voted = inpaint(frames, missed, votes=5).background[6]
    assert psnr(voted[target], truth[6][target]) > 30 > psnr(nearest[target], truth[6][target])
