"""The toy domain: vocabulary, held-out split, rendering, shards the build and the trainer both read."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from layert2v.data import DataConfig, LayerLoader
from vidlayer.cli import app
from vidlayer.io.shards import read_shard
from vidlayer.layers import composite
from vidlayer.toy import (ALL_OBJECTS, COLOURS, HELD_OUT_COLOUR_MOTION, HELD_OUT_SHAPE_COLOUR, MOTIONS,
                          SHAPES, TEXTURES, TRAIN_OBJECTS, ToyBackground, ToyObject, ToyScene, make_video,
                          render_scene, sample_scene, scene_rng, write_toy_dataset)

FRAMES, SIZE = 17, 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """6 training and 3 test samples in shards of 4."""
    out = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out, train=6, test=3, seed=5, shard_size=4, progress=False)
    return out


def test_every_attribute_value_is_trained_and_no_circle_rotates():
    for name, values in (("shape", SHAPES), ("colour", COLOURS), ("motion", MOTIONS)):
        assert {getattr(o, name) for o in TRAIN_OBJECTS} == set(values)
    assert not any(o.shape == "circle" and o.motion == "rotate" for o in ALL_OBJECTS)
    with pytest.raises(ValueError, match="rotating circle"):
        ToyObject("circle", "red", "rotate")
    assert len(ALL_OBJECTS) == 4 * 6 * 6 - 6 and 0 < len(TRAIN_OBJECTS) < len(ALL_OBJECTS)


def test_held_out_pairs_appear_only_in_the_test_split():
    train = [sample_scene(scene_rng(0, "train", i), "train") for i in range(300)]
    test = [sample_scene(scene_rng(0, "test", i), "test") for i in range(300)]
    train_objects = {o for scene in train for o in scene.objects}
    assert not {(o.shape, o.colour) for o in train_objects} & HELD_OUT_SHAPE_COLOUR
    assert not {(o.colour, o.motion) for o in train_objects} & HELD_OUT_COLOUR_MOTION
    assert all(any(o.held_out for o in scene.objects) for scene in test)
    assert {s.split for s in train} == {"train"} and {s.split for s in test} == {"test"}
    assert not {s.captions().full for s in train} & {s.captions().full for s in test}
    # Every held-out pair is asked for somewhere in the test split.
    test_objects = {o for scene in test for o in scene.objects}
    assert HELD_OUT_SHAPE_COLOUR <= {(o.shape, o.colour) for o in test_objects}
    assert HELD_OUT_COLOUR_MOTION <= {(o.colour, o.motion) for o in test_objects}
    assert {len(s.objects) for s in train} == {1, 2, 3}
    assert all(len({o.colour for o in s.objects}) == len(s.objects) for s in train + test)


def test_the_same_seed_gives_the_same_video_and_another_seed_another():
    a, b, c = make_video(3, "test", 7), make_video(3, "test", 7), make_video(4, "test", 7)
    assert a.scene == b.scene and np.array_equal(a.full, b.full) and np.array_equal(a.alphas, b.alphas)
    assert a.scene != c.scene or not np.array_equal(a.full, c.full)


def test_captions_name_every_layer():
    scene = ToyScene((ToyObject("star", "red", "left"), ToyObject("circle", "green", "zoom")),
                     ToyBackground("stripes", "blue", "down"))
    captions = scene.captions()
    assert captions.foreground == ["a red star moving left", "a green circle zooming in"]
    assert captions.background == "blue stripes drifting down"
    assert captions.full == "a red star moving left and a green circle zooming in over blue stripes drifting down"
    assert ToyScene.from_captions(captions.foreground, captions.background) == scene
    assert ToyScene.from_json(json.loads(json.dumps(scene.to_json()))) == scene
    for obj in ALL_OBJECTS:
        assert ToyScene.from_captions([obj.caption], captions.background).objects == (obj,)
    with pytest.raises(ValueError, match="not a toy object caption"):
        ToyScene.from_captions(["a red ball bouncing"], captions.background)


def test_rendered_layers_composite_to_the_video_and_mattes_are_binary_off_the_edge():
    video = make_video(0, "train", 2)
    k = len(video.scene.objects)
    assert video.alphas.shape == (k, FRAMES, SIZE, SIZE) and video.foregrounds.shape == (k, FRAMES, SIZE, SIZE, 3)
    expected = np.round(composite(video.foregrounds.astype(np.float32), video.alphas, video.background))
    assert np.array_equal(video.full, expected.astype(np.uint8))
    kernel = np.ones((3, 3), np.uint8)
    for alpha in video.alphas.reshape(-1, SIZE, SIZE):
        mask = (alpha > 0.5).astype(np.uint8)
        edge = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)
        assert np.isin(alpha[~edge], (0.0, 1.0)).all()
        assert 0 < np.count_nonzero((alpha > 0) & (alpha < 1)) <= np.count_nonzero(edge)  # anti-aliased, thinly
        assert not alpha[[0, -1]].any() and not alpha[:, [0, -1]].any()  # wholly inside the frame
    # The foreground layer is the object's flat colour; the background keeps to muted colours.
    assert all(len(np.unique(fg.reshape(-1, 3), axis=0)) == 1 for fg in video.foregrounds)
    hsv = cv2.cvtColor(video.background.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)
    assert hsv[..., 1].max() <= 0.5 * 255 + 1


@pytest.mark.parametrize("motion, check", [
    ("left", lambda c, a: c[-1, 0] - c[0, 0] < -0.25 * SIZE),
    ("right", lambda c, a: c[-1, 0] - c[0, 0] > 0.25 * SIZE),
    ("up", lambda c, a: c[-1, 1] - c[0, 1] < -0.25 * SIZE),
    ("down", lambda c, a: c[-1, 1] - c[0, 1] > 0.25 * SIZE),
    ("zoom", lambda c, a: a[-1] > 3 * a[0]),
    ("rotate", lambda c, a: np.abs(c[-1] - c[0]).max() < 1 and abs(a[-1] / a[0] - 1) < 0.05),
])
def test_objects_move_as_their_caption_says(motion, check):
    scene = ToyScene((ToyObject("square", "cyan", motion),), ToyBackground("dots", "red", "up"))
    alpha = render_scene(scene, np.random.default_rng(1)).alphas[0]
    area = alpha.sum(axis=(1, 2))
    ys, xs = np.mgrid[:SIZE, :SIZE]
    centroids = np.stack([(alpha * xs).sum(axis=(1, 2)) / area, (alpha * ys).sum(axis=(1, 2)) / area], axis=1)
    assert check(centroids, area)


@pytest.mark.parametrize("drift, axis, sign", [("left", 2, -1), ("right", 2, 1), ("up", 1, -1), ("down", 1, 1)])
@pytest.mark.parametrize("texture", TEXTURES)
def test_backgrounds_drift_as_their_caption_says(texture, drift, axis, sign):
    """Frame t+1 matches frame t moved a pixel toward the drift better than moved away from it."""
    scene = ToyScene((ToyObject("star", "red", "left"),), ToyBackground(texture, "green", drift))
    background = render_scene(scene, np.random.default_rng(2)).background.astype(np.float32)
    toward = np.abs(np.roll(background[:-1], sign, axis=axis) - background[1:])[:, 2:-2, 2:-2].mean()
    away = np.abs(np.roll(background[:-1], -sign, axis=axis) - background[1:])[:, 2:-2, 2:-2].mean()
    assert toward < away


def test_shards_hold_the_build_format_and_the_scene(dataset):
    info = json.loads((dataset / "toy.json").read_text())
    assert info["samples"] == {"train": 6, "test": 3} and info["shards"]["train"] == ["shard-000000.tar",
                                                                                      "shard-000001.tar"]
    assert sorted(p.name for p in (dataset / "train").glob("shard-*")) == info["shards"]["train"]
    samples = [s for shard in sorted((dataset / "train").glob("*.tar")) for s in read_shard(shard)]
    assert [s["__key__"] for s in samples] == [f"toy-train-{i:06d}" for i in range(6)]
    for sample in samples:
        meta = sample["json"]
        scene = ToyScene.from_json(meta["toy"])
        assert meta["captions"]["foreground"] == scene.captions().foreground
        assert meta["captions"]["full"] == scene.captions().full and meta["toy"]["split"] == "train"
        assert meta["num_foregrounds"] == len(scene.objects) == len(meta["layers"]["alpha"])
        assert meta["frames"] == FRAMES and meta["fps"] == 16.0 and meta["pipeline"] == "toy"
        assert all(name in sample for name in (meta["layers"]["full"], *meta["layers"]["alpha"]))
        assert meta["toy"]["objects"][0]["start"] and "period" in meta["toy"]["background"]
    prompts = [json.loads(line) for line in (dataset / "test" / "prompts.jsonl").read_text().splitlines()]
    assert [p["key"] for p in prompts] == [f"toy-test-{i:06d}" for i in range(3)]
    assert all(ToyScene.from_json(p["toy"]).split == "test" for p in prompts)


def test_shards_read_back_with_webdataset(dataset):
    urls = [str(p) for p in sorted((dataset / "test").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == 3 and all(s["json"]["toy"]["split"] == "test" for s in samples)


def test_the_training_loader_reads_toy_shards(dataset):
    config = DataConfig(shards=str(dataset / "train"), height=SIZE, width=SIZE, batch_size=1, caption_dropout=0.0,
                        shuffle_buffer=0, repeat=False)
    batches = list(LayerLoader(config))
    assert sorted(key for batch in batches for key in batch.keys) == [f"toy-train-{i:06d}" for i in range(6)]
    batch = batches[0]
    k = batch.layout.num_foregrounds
    assert batch.videos["full"].shape == (1, 3, FRAMES, SIZE, SIZE)
    assert batch.videos["alpha0"].shape == (1, 1, FRAMES, SIZE, SIZE)
    assert batch.prompts[0][0].endswith(batch.prompts[0][1]) and len(batch.prompts[0]) == 2 + k
    alpha = batch.videos["alpha0"].numpy()
    assert set(np.unique(alpha[(alpha < 0.02) | (alpha > 0.98)]).round(3)) <= {0.0, 1.0}


def test_writing_refuses_a_folder_with_shards_and_bad_sizes(dataset, tmp_path):
    with pytest.raises(FileExistsError):
        write_toy_dataset(dataset, 1, 1, progress=False)
    with pytest.raises(ValueError, match="even size"):
        write_toy_dataset(tmp_path / "odd", 1, 1, size=63, progress=False)
    assert not (tmp_path / "odd").exists()


def test_synth_toy_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "toy"), "--toy", "--n", "3", "--n-test", "2",
                                 "--frames", "5", "--size", "32", "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "toy" / "train").glob("shard-*.tar"))) == 2
    sample = next(read_shard(next((tmp_path / "toy" / "test").glob("shard-*.tar"))))
    assert sample["json"]["frames"] == 5 and sample["json"]["width"] == 32 and sample["json"]["fps"] == 16.0
    again = runner.invoke(app, ["synth", str(tmp_path / "toy"), "--toy", "--n", "3"])
    assert again.exit_code == 2 and "already holds shards" in again.output
