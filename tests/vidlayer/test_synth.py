import json

import cv2
import numpy as np
import pytest

from vidlayer import synth
from vidlayer.io.video import decode_video
from vidlayer.synth import load_ground_truth, render_scene, synthesize

SIZE = {"width": 160, "height": 96, "fps": 24.0, "seconds": 1.0}


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(7, index, **SIZE) for index in range(6)]


def over(foregrounds, alphas, background):
    """Reference composite, layer 0 on top, written out independently of the module."""
    out = background.astype(np.float64)
    for k in reversed(range(len(alphas))):
        a = alphas[k][..., None].astype(np.float64)
        out = a * foregrounds[k] + (1 - a) * out
    return out


def test_same_arguments_give_identical_arrays_and_other_seeds_differ(scenes):
    again = render_scene(7, 0, **SIZE)
    first = scenes[0]
    for name in ("full", "background", "foregrounds", "alphas", "camera"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert again.captions == first.captions and again.key == "synth-0007-0000"
    other = render_scene(8, 0, **SIZE)
    assert other.full.shape == first.full.shape and not np.array_equal(other.full, first.full)


def test_shapes_and_types(scenes):
    for scene in scenes:
        k = len(scene.alphas)
        assert scene.full.shape == scene.background.shape == (24, 96, 160, 3)
        assert scene.foregrounds.shape == (k, 24, 96, 160, 3) and scene.foregrounds.dtype == np.uint8
        assert scene.alphas.dtype == np.float32 and scene.alphas.min() >= 0 and scene.alphas.max() <= 1
        assert scene.camera.shape == (24, 3, 3) and scene.camera.dtype == np.float64
        assert np.allclose(scene.camera[0], np.eye(3))
        assert len(scene.captions["foreground"]) == k and scene.fps == 24.0


@pytest.fixture(scope="module")
def hard_scenes():
    """One clip per hard mode (index 4 is a tracking clip that also has a near plane at this seed)."""
    return [render_scene(7, index, hard=True, **SIZE) for index in range(5)]


def test_full_is_the_over_composite_of_the_layers(scenes, hard_scenes):
    for scene in scenes + hard_scenes:
        error = np.abs(over(scene.foregrounds, scene.alphas, scene.background) - scene.full)
        assert error.mean() < 0.3 and error.max() <= 0.5 + 1e-3


def test_every_layer_has_a_soft_visible_matte_in_every_frame(scenes):
    for scene in scenes:
        for alpha in scene.alphas:
            soft = (alpha > 0) & (alpha < 1)
            assert soft.mean() > 0.001, "edges are feathered"
            assert (alpha == 1).any(), "the interior is opaque"
            assert alpha.reshape(len(alpha), -1).max(axis=1).min() > 0, "never wholly out of frame or hidden"
            assert 0.003 < alpha.mean() < 0.5


def test_foregrounds_are_filled_with_texture_where_alpha_is_zero(scenes):
    for scene in scenes:
        for colour, alpha in zip(scene.foregrounds, scene.alphas):
            outside = colour[alpha == 0]
            assert outside.std() > 5, "not a flat fill"


def centroid(alpha):
    ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    return np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()


def test_foregrounds_move(scenes):
    for scene in scenes:
        for alpha in scene.alphas:
            path = np.array([centroid(a) for a in alpha])
            assert np.linalg.norm(path - path[0], axis=1).max() > 1.0


STILL = np.eye(3)[None].repeat(24, axis=0)
EVERY_ROW = slice(None)


def warp_error(scene, homographies, rows, start, end):
    """Mean error of predicting background rows of frame `end` by warping frame `start` with the given cameras."""
    first, last = scene.background[start], scene.background[end].astype(float)
    height, width = first.shape[:2]
    step = homographies[end] @ np.linalg.inv(homographies[start])
    predicted = cv2.warpPerspective(first, step, (width, height), flags=cv2.INTER_LINEAR).astype(float)
    inside = cv2.warpPerspective(np.ones((height, width), np.uint8), step, (width, height)) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    selected = np.zeros(height, bool)
    selected[rows] = True
    inside &= selected[:, None]
    assert inside.sum() > 0.3 * selected.sum() * width
    return np.abs(predicted - last)[inside].mean()


def test_ground_truth_camera_explains_the_background_motion(scenes):
    moving = [s for s in scenes if np.abs(s.camera[-1] - np.eye(3)).max() > 0.05]
    assert moving, "some clip in the set should move its camera"
    for scene in moving:
        warped_error = warp_error(scene, scene.camera, EVERY_ROW, 0, -1)
        assert warped_error < 8 and warped_error < 0.5 * warp_error(scene, STILL, EVERY_ROW, 0, -1)


# (0, 3, hard): a late entrance, in view only near the end, where a strip placed mid-clip would miss it.
@pytest.mark.parametrize("seed, index, hard", [(3, 1, False), (0, 3, True)])
def test_an_occluder_in_the_background_cuts_into_the_foreground_matte(monkeypatch, seed, index, hard):
    monkeypatch.setattr(synth, "OCCLUDER_CHANCE", 0.0)
    clear = render_scene(seed, index, num_foregrounds=1, hard=hard, **SIZE)
    monkeypatch.setattr(synth, "OCCLUDER_CHANCE", 1.0)
    occluded = render_scene(seed, index, num_foregrounds=1, hard=hard, **SIZE)
    assert np.all(occluded.alphas <= clear.alphas + 1e-6)
    assert (clear.alphas - occluded.alphas).max() > 0.5
    assert not np.array_equal(clear.background, occluded.background)
    assert "in the foreground" in occluded.captions["background"]


def test_number_of_foregrounds_can_be_fixed():
    assert render_scene(1, 0, num_foregrounds=3, **SIZE).alphas.shape[0] == 3
    empty = render_scene(1, 0, num_foregrounds=0, **SIZE)
    assert empty.alphas.shape[0] == 0 and np.array_equal(empty.full, empty.background)


def test_captions_describe_every_layer(scenes, hard_scenes):
    for scene in scenes + hard_scenes:
        captions = scene.captions
        texts = [captions["full"], captions["background"], *captions["foreground"]]
        assert all(isinstance(text, str) and text for text in texts)
        assert all(layer in captions["full"] for layer in captions["foreground"])
        assert "camera" in captions["full"] and "camera" in captions["background"]
    assert len({s.captions["full"] for s in scenes}) == len(scenes)


@pytest.mark.parametrize("arguments, message", [
    ({"width": 161}, "even"),
    ({"height": 16}, "at least 32"),
    ({"seconds": 0.04}, "at least 2 frames"),
    ({"fps": 0}, "positive"),
    ({"num_foregrounds": 9}, "num_foregrounds"),
])
def test_bad_arguments_are_refused_clearly(arguments, message):
    with pytest.raises(ValueError, match=message):
        render_scene(0, 0, **{**SIZE, **arguments})


def test_synthesize_refuses_zero_clips(tmp_path):
    with pytest.raises(ValueError, match="n must be at least 1"):
        synthesize(tmp_path, 0)
    assert not (tmp_path / "raw").exists()


def test_synthesize_writes_raw_clips_captions_and_ground_truth(tmp_path):
    keys = synthesize(tmp_path, 2, seed=5, progress=False, **SIZE)
    assert keys == ["synth-0005-0000", "synth-0005-0001"]
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [f"{keys[0]}.mp4", f"{keys[0]}.json", f"{keys[1]}.mp4", f"{keys[1]}.txt"])
    assert not [p for p in tmp_path.rglob(".*")], "no temporary files left behind"

    for index, key in enumerate(keys):
        scene = render_scene(5, index, **SIZE)
        if index % 2 == 0:
            sidecar = json.loads((raw / f"{key}.json").read_text())
            assert sidecar == {"caption": scene.captions["full"], "fg_caption": scene.captions["foreground"],
                               "bg_caption": scene.captions["background"]}
        else:
            assert (raw / f"{key}.txt").read_text().strip() == scene.captions["full"]

        video = decode_video(raw / f"{key}.mp4")
        assert video.shape == scene.full.shape
        mse = ((video.astype(float) - scene.full) ** 2).mean()
        assert 10 * np.log10(255 ** 2 / mse) > 28, "lossy, but the same clip"

        folder = tmp_path / "gt" / key
        k = len(scene.alphas)
        layer_files = {f"{kind}{i}.mp4" for i in range(k) for kind in ("fg", "alpha")}
        expected = {"full.mp4", "background.mp4", "layers.json"} | layer_files
        assert {p.name for p in folder.iterdir()} == expected
        layers = json.loads((folder / "layers.json").read_text())
        assert layers["num_frames"] == 24 and (layers["width"], layers["height"]) == (160, 96)
        assert layers["num_foregrounds"] == k and layers["key"] == key and layers["fps"] == 24.0

        truth = load_ground_truth(folder)
        assert truth.key == key and truth.captions == scene.captions
        assert np.array_equal(truth.full, scene.full) and np.array_equal(truth.background, scene.background)
        assert np.array_equal(truth.foregrounds, scene.foregrounds)
        assert np.array_equal(truth.alphas, scene.alphas)
        assert np.allclose(truth.camera, scene.camera)


PINNED_CAPTION = ("a cup of espresso drifting quickly to the right until partly out of frame and a stained cell "
                  "cluster moving up and to the right while shrinking and spinning against a cluttered garage, "
                  "the camera panning left")
PINNED_CAMERA = [[1.040425, 0.004761, 31.780493], [-0.004761, 1.040425, -1.908927], [0.0, 0.0, 1.0]]


def test_normal_clips_keep_their_random_draws(scenes):
    """Pinned captions and camera of a normal clip: hard mode must not disturb the normal path's draws."""
    scene = scenes[0]
    assert scene.captions["full"] == PINNED_CAPTION and scene.key == "synth-0007-0000" and scene.hard is None
    assert np.allclose(scene.camera[-1], PINNED_CAMERA, atol=1e-6)
    assert scene.near_camera is None
    assert np.array_equal(render_scene(7, 0, hard=False, **SIZE).full, scene.full)


def test_hard_modes_cycle_by_index_and_are_keyed_apart(hard_scenes):
    assert [scene.hard for scene in hard_scenes] == ["tracking", "parallax", "static", "late", "tracking"]
    assert [scene.key for scene in hard_scenes] == [f"synth-hard-0007-{i:04d}" for i in range(5)]
    again = render_scene(7, 1, hard=True, **SIZE)
    for name in ("full", "background", "foregrounds", "alphas", "camera", "near_camera"):
        assert np.array_equal(getattr(again, name), getattr(hard_scenes[1], name)), name
    assert again.captions == hard_scenes[1].captions
    assert not np.array_equal(again.full, render_scene(7, 1, **SIZE).full)


def screen_travel(points):
    """Largest distance of a [T, 2] path from its start."""
    return np.linalg.norm(points - points[0], axis=1).max()


def camera_travel(camera, width, height):
    """How far the frame-0 centre moves across the image by the last frame."""
    x, y, w = camera[-1] @ [(width - 1) / 2, (height - 1) / 2, 1.0]
    return np.hypot(x / w - (width - 1) / 2, y / w - (height - 1) / 2)


def test_tracking_keeps_the_subject_in_place_while_the_background_slides(hard_scenes):
    for scene in (hard_scenes[0], hard_scenes[4]):
        width = scene.full.shape[2]
        for alpha in scene.alphas:
            assert screen_travel(np.array([centroid(a) for a in alpha])) < 0.06 * width
        assert camera_travel(scene.camera, width, scene.full.shape[1]) > 0.4 * width
        top = slice(0, scene.full.shape[1] // 3)
        followed, held = warp_error(scene, scene.camera, top, 10, 13), warp_error(scene, STILL, top, 10, 13)
        assert followed < 8 and followed < 0.5 * held, "the background pixels slide as the camera says"
        assert "the camera following" in scene.captions["full"] and "bobbing" in scene.captions["full"]


def test_parallax_puts_a_faster_near_plane_into_the_background(hard_scenes):
    scene = hard_scenes[1]
    height, width = scene.full.shape[1:3]
    far, near = camera_travel(scene.camera, width, height), camera_travel(scene.near_camera, width, height)
    assert far > 0.1 * width and 1.5 <= near / far <= 3.0
    bottom, top = slice(height - height // 8, height), slice(0, height // 3)

    def error(cameras, rows):
        return warp_error(scene, cameras, rows, 10, 12)

    # Measured on the background layer: its bottom band follows the near camera, its top the far one.
    assert error(scene.near_camera, bottom) < 0.5 * error(scene.camera, bottom)
    assert error(scene.camera, top) < 0.5 * error(scene.near_camera, top)
    assert len(scene.alphas) == len(scene.captions["foreground"])
    assert scene.alphas[:, :, bottom].mean() < 0.3, "the near plane is no foreground layer"
    assert " seen across " in scene.captions["background"]


def test_static_subject_hides_background_that_no_frame_shows(hard_scenes):
    scene = hard_scenes[2]
    width = scene.full.shape[2]
    assert camera_travel(scene.camera, width, scene.full.shape[1]) < 0.01 * width
    for alpha in scene.alphas:
        assert screen_travel(np.array([centroid(a) for a in alpha])) < 0.01 * width
        ever, always = (alpha > 0).any(axis=0), (alpha > 0.99).all(axis=0)
        assert always.sum() > 0.6 * ever.sum() and always.mean() > 0.02


def test_late_subject_is_out_of_frame_then_enters(hard_scenes):
    scene = hard_scenes[3]
    for alpha, caption in zip(scene.alphas, scene.captions["foreground"]):
        present = alpha.reshape(len(alpha), -1).max(axis=1) > 0
        first = np.argmax(present)
        assert 0.3 * len(alpha) <= first <= 0.75 * len(alpha) and present[first:].all()
        assert "entering from the" in caption


def test_synthesize_hard_records_the_mode(tmp_path):
    keys = synthesize(tmp_path, 2, seed=7, progress=False, hard=True, **SIZE)
    assert keys == ["synth-hard-0007-0000", "synth-hard-0007-0001"]
    for key, mode in zip(keys, ("tracking", "parallax")):
        layers = json.loads((tmp_path / "gt" / key / "layers.json").read_text())
        assert layers["hard"] == mode
        truth = load_ground_truth(tmp_path / "gt" / key)
        assert truth.hard == mode and truth.key == key
    truth = load_ground_truth(tmp_path / "gt" / keys[1])
    assert np.allclose(truth.near_camera, render_scene(7, 1, hard=True, **SIZE).near_camera)
    tracking_without_near_plane = json.loads((tmp_path / "gt" / keys[0] / "layers.json").read_text())
    assert "near_camera" not in tracking_without_near_plane
