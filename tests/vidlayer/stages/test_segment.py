import dataclasses
import typing

import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.stages.base import registered
from vidlayer.stages.segment import MotionSegmenter, MotionSegmentParams
from vidlayer.synth import render_scene

WIDTH, HEIGHT, FRAMES = 256, 144, 17


def glide(start: tuple[float, float], velocity: tuple[float, float], num_frames: int = FRAMES) -> np.ndarray:
    """[T, 2] centres of a disc moving at a constant velocity (pixels per frame)."""
    return np.asarray(start) + np.arange(num_frames)[:, None] * np.asarray(velocity)


def panning_scene(paths: list[np.ndarray], pan: tuple[int, int] = (3, 1),
                  num_frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Textured discs of radius 22 following `paths` ([T, 2] centres each) over a photo that the
    camera pans across; returns frames and true masks [K, T, H, W]."""
    grass = cv2.resize(skimage.data.grass(), (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_AREA)
    photo = (grass[..., None] * np.float32([0.6, 0.9, 0.4])).astype(np.uint8)
    skin = cv2.resize(skimage.data.astronaut()[30:230, 150:350], (44, 44), interpolation=cv2.INTER_AREA)
    frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
    masks = np.zeros((len(paths), num_frames, HEIGHT, WIDTH), bool)
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    for t in range(num_frames):
        x0, y0 = 20 + pan[0] * t, 20 + pan[1] * t
        frames[t] = photo[y0:y0 + HEIGHT, x0:x0 + WIDTH]
        for k, path in enumerate(paths):
            cx, cy = path[t]
            masks[k, t] = np.hypot(xs - cx, ys - cy) < 22
            # The disc's texture travels with it.
            texture = cv2.warpAffine(skin, np.float32([[1, 0, cx - 22], [0, 1, cy - 22]]), (WIDTH, HEIGHT))
            frames[t][masks[k, t]] = texture[masks[k, t]]
    return frames, masks


def segment(frames: np.ndarray, **params) -> Clip:
    stage = MotionSegmenter(MotionSegmentParams(**params))
    stage.setup()
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, fps=16.0)
    return stage.process(clip)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame IoU of [T, H, W] masks."""
    return (a & b).sum(axis=(-2, -1)) / np.maximum((a | b).sum(axis=(-2, -1)), 1)


def test_backend_is_registered_with_simple_documented_params():
    assert registered()[("segment", "motion")] is MotionSegmenter
    hints = typing.get_type_hints(MotionSegmentParams)
    assert all(hints[f.name] in (int, float, bool, str) for f in dataclasses.fields(MotionSegmentParams))


def test_a_moving_disc_is_found_under_a_panning_camera():
    frames, truth = panning_scene([glide((70, 60), (4.0, 1.5))])
    clip = segment(frames)
    assert clip.masks.shape == (1, FRAMES, HEIGHT, WIDTH) and clip.masks.dtype == bool
    assert iou(clip.masks[0], truth[0]).mean() > 0.9
    # The motion it estimated is kept for later stages: one flow field and homography per frame pair.
    assert clip.motion.flow.shape == (FRAMES - 1, HEIGHT, WIDTH, 2)
    assert clip.motion.homographies.shape == (FRAMES - 1, 3, 3)
    # The camera is the pan (3, 1) pixels per frame, not the disc: the backdrop's corners move with it.
    corners = np.float64([[[0, 0]], [[WIDTH, 0]], [[0, HEIGHT]], [[WIDTH, HEIGHT]]])
    for h in clip.motion.homographies:
        assert np.abs(cv2.perspectiveTransform(corners, h) - (corners - [3, 1])).max() < 0.2
    metrics = clip.metrics
    assert 0.5 < metrics["segment_confidence"] <= 1.0
    assert metrics["segment_coverage"] == pytest.approx(truth.any(axis=0).mean(), rel=0.15)
    assert metrics["segment_instances"] == 1


def test_two_subjects_get_a_layer_each_and_keep_it():
    frames, truth = panning_scene([glide((60, 50), (3.0, 2.0)), glide((200, 100), (0.0, -3.0))])
    clip = segment(frames)
    assert clip.masks.shape[0] == 2
    assert not (clip.masks[0] & clip.masks[1]).any()
    # Whichever disc a layer holds in the first frame, it holds in every frame.
    first = [int(np.argmax([iou(layer[:1], disc[:1])[0] for disc in truth])) for layer in clip.masks]
    assert sorted(first) == [0, 1]
    for layer, disc in zip(clip.masks, first):
        assert iou(layer, truth[disc]).min() > 0.8


def test_max_instances_keeps_the_most_salient_subject():
    # The same two discs, but the second one grazes the frame border: less salient.
    frames, truth = panning_scene([glide((60, 50), (3.0, 2.0)), glide((235, 100), (0.0, -3.0))])
    clip = segment(frames, max_instances=1)
    assert clip.masks.shape[0] == 1 and clip.metrics["segment_instances"] == 1
    assert iou(clip.masks[0], truth[0]).mean() > 0.85


def test_a_subject_that_pauses_keeps_its_mask():
    # The disc rests on the backdrop for frames 8 to 12, then moves on.
    steps = np.concatenate([np.arange(8), np.full(5, 8), np.arange(9, 21)])
    path = np.asarray((60.0, 50.0)) + steps[:, None] * np.asarray((4.0, 1.5))
    frames, truth = panning_scene([path], num_frames=len(steps))
    clip = segment(frames)
    assert iou(clip.masks.any(axis=0), truth[0]).min() > 0.8


def test_a_subject_that_pauses_longer_than_max_pause_is_one_layer_throughout():
    # A still camera; the disc stands still for frames 8 to 30 (1.4 s at 16 fps, past max_pause), then moves on.
    steps = np.concatenate([np.arange(8), np.full(23, 8), np.arange(9, 17)])
    path = np.asarray((40.0, 40.0)) + steps[:, None] * np.asarray((6.0, 2.5))
    frames, truth = panning_scene([path], pan=(0, 0), num_frames=len(steps))
    clip = segment(frames, max_pause=0.5)
    assert clip.masks.shape[0] == 1
    overlap = iou(clip.masks[0], truth[0])
    assert overlap.mean() > 0.85 and overlap.min() > 0.7


@pytest.mark.parametrize("pan", [(0, 0), (2, 1)], ids=["static", "camera pan"])
def test_nothing_moving_on_its_own_is_dropped(pan):
    frames, _ = panning_scene([], pan=pan)
    with pytest.raises(Drop) as drop:
        segment(frames)
    assert drop.value.reason == "no_foreground"
    assert "moves independently" in drop.value.message


def test_too_few_frames_are_dropped():
    frames, _ = panning_scene([glide((70, 60), (4.0, 1.5))], num_frames=2)
    with pytest.raises(Drop) as drop:
        segment(frames)
    assert drop.value.reason == "no_foreground"


def test_rendered_clips_are_segmented_accurately():
    ious = []
    for seed in range(4):
        scene = render_scene(seed, 0, width=428, height=240, fps=16.0, seconds=FRAMES / 16, num_foregrounds=1)
        ious.append(iou(segment(scene.full).masks.any(axis=0), scene.alphas[0] > 0.5).mean())
    assert np.mean(ious) > 0.8 and min(ious) > 0.7
