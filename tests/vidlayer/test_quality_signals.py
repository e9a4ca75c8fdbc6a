import numpy as np
import pytest

from vidlayer.motion import camera_flow, estimate_motion
from vidlayer.quality_signals import (alpha_flicker, area_variation, border_share, colour_contrast, edge_alignment,
                                      ghost, motion_signals)
from vidlayer.synth import render_scene


@pytest.fixture(scope="module")
def scene():
    return render_scene(2, 0, width=256, height=144, fps=16, seconds=1.1, num_foregrounds=1)


def test_ghost_sees_a_background_that_still_shows_the_subject(scene):
    coverage = scene.alphas[0]
    assert ghost(scene.full, scene.background, coverage) < 0.1
    assert ghost(scene.full, scene.full, coverage) == 1.0


def test_motion_inside_the_true_matte_and_none_left_out(scene):
    motion = estimate_motion(scene.full)
    camera = camera_flow(motion)
    true = motion_signals(scene.alphas[0], motion.flow, camera)
    corner = np.zeros_like(scene.alphas[0])
    corner[:, :20, :20] = 1  # a patch of still background taken for the subject
    wrong = motion_signals(corner, motion.flow, camera)
    assert true["quality_motion_inside"] > 3 * wrong["quality_motion_inside"]
    assert true["quality_motion_uncovered"] < 0.2 < wrong["quality_motion_uncovered"]


def test_edges_and_colour_follow_a_subject_not_a_patch_of_its_backdrop():
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    frames[..., 1] = 140
    frames[:, :, :48, 1] = 90  # the backdrop has an edge of its own, away from the patch below
    ys, xs = np.mgrid[:64, :96]
    disc = (ys - 32) ** 2 + (xs - 60) ** 2 < 144
    frames[:, disc] = (220, 30, 30)
    subject = np.stack([disc, disc])
    patch = np.zeros_like(subject)
    patch[:, 2:18, 70:90] = True
    assert edge_alignment(frames, subject) > 0.9 > 0.2 > edge_alignment(frames, patch)
    assert colour_contrast(frames, subject) > 0.9 > 0.1 > colour_contrast(frames, patch)


def test_area_variation_and_border_share():
    steady = np.zeros((4, 40, 40), np.float32)
    steady[:, 10:20, 10:20] = 1
    blinking = steady * np.array([1, 0, 1, 0], np.float32)[:, None, None]
    assert area_variation(steady) == 0.0 < 0.5 < area_variation(blinking)
    edge = np.zeros_like(steady)
    edge[:, :, :1] = 1
    assert border_share(steady) == 0.0 and border_share(edge) == 1.0


def test_flicker_follows_motion():
    """A disc sliding with the flow is stable; the same disc blinking is not."""
    flow = np.zeros((3, 32, 48, 2), np.float32)
    flow[..., 0] = 2.0  # everything moves 2 px right per frame
    ys, xs = np.mgrid[:32, :48]
    sliding = np.stack([((xs - 10 - 2 * t) ** 2 + (ys - 16) ** 2 < 36).astype(np.float32) for t in range(4)])
    blinking = sliding * np.array([1, 0, 1, 0], np.float32)[:, None, None]
    assert alpha_flicker(sliding, flow) < 0.1 < alpha_flicker(blinking, flow)
