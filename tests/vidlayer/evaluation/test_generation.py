"""Generation metrics on toy samples with known answers: the truth scores perfectly, each defect scores worse."""

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from layert2v.pipeline import LayeredVideo, LayerPrompts
from vidlayer.cli import app
from vidlayer.evaluation.generation import (GeneratedSample, background_drift, background_texture,
                                            evaluate_generation, load_samples, object_colour, read_motion,
                                            read_shape, score_sample)
from vidlayer.layers import composite
from vidlayer.toy import (ALL_OBJECTS, COLOURS, DRIFTS, TEXTURES, ToyBackground, ToyObject, ToyScene, object_rgb,
                          render_scene, write_toy_dataset)

SCENE = ToyScene((ToyObject("star", "red", "left"), ToyObject("square", "blue", "zoom")),
                 ToyBackground("stripes", "green", "down"))


def truth_sample(scene: ToyScene = SCENE, seed: int = 0) -> GeneratedSample:
    video = render_scene(scene, np.random.default_rng(seed))
    return GeneratedSample("truth", scene, video.full, video.background, video.foregrounds, video.alphas,
                           truth_alphas=video.alphas)


def recomposed(sample: GeneratedSample, **layers: np.ndarray) -> GeneratedSample:
    """The sample with some layers replaced and `full` re-composited, so only the replaced layers are at fault."""
    changed = replace(sample, **layers)
    full = composite(changed.foregrounds.astype(np.float32), changed.alphas, changed.background)
    return replace(changed, full=np.clip(np.round(full), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def perfect() -> dict:
    return score_sample(truth_sample())


def test_the_truth_scores_perfectly(perfect):
    assert perfect["colour"] == perfect["shape"] == perfect["motion"] == 1.0
    assert perfect["texture"] == perfect["bg_colour"] == perfect["drift"] == 1.0
    assert perfect["coherence"] < 0.002
    assert perfect["bg_leak"] == 0.0 and perfect["fg_texture"] == 0.0 and perfect["temporal_change"] == 0.0
    assert perfect["alpha_soft"] == 0.0 and perfect["alpha_edge_width"] < 1.0
    assert [o["measured"]["shape"] for o in perfect["objects"]] == ["star", "square"]
    assert all(o["measured"]["shape_iou"] > 0.85 for o in perfect["objects"])


@pytest.mark.parametrize("seed, obj", enumerate(ALL_OBJECTS[::5] + (ToyObject("triangle", "cyan", "rotate"),
                                                                    ToyObject("star", "yellow", "rotate"))))
def test_shape_motion_and_colour_are_read_off_rendered_objects(seed, obj):
    video = render_scene(ToyScene((obj,), SCENE.background), np.random.default_rng(seed))
    alpha = video.alphas[0]
    shape = read_shape(alpha)
    assert (shape.shape, read_motion(alpha, shape), object_colour(video.foregrounds[0], alpha)) == (
        obj.shape, obj.motion, obj.colour)


@pytest.mark.parametrize("texture", TEXTURES)
def test_texture_and_drift_are_read_off_rendered_backgrounds(texture):
    for seed, (colour, drift) in enumerate(zip(COLOURS, DRIFTS + DRIFTS)):
        background = ToyBackground(texture, colour, drift)
        video = render_scene(ToyScene((ALL_OBJECTS[0],), background), np.random.default_rng(seed)).background
        assert (background_texture(video), background_drift(video)) == (texture, drift)
    assert background_drift(np.repeat(video[:1], len(video), axis=0)) == "still"


def test_a_swapped_colour_fails_colour_adherence(perfect):
    sample = truth_sample()
    foregrounds = sample.foregrounds.copy()
    foregrounds[0] = np.round(object_rgb("yellow")).astype(np.uint8)
    row = score_sample(recomposed(sample, foregrounds=foregrounds))
    assert row["objects"][0]["measured"]["colour"] == "yellow" and row["colour"] == 0.5 < perfect["colour"]
    assert row["shape"] == row["motion"] == 1.0


def test_a_wrong_shape_fails_shape_adherence():
    sample = truth_sample()
    wrong = render_scene(replace(SCENE, objects=(ToyObject("circle", "red", "left"), SCENE.objects[1])),
                         np.random.default_rng(0))
    row = score_sample(recomposed(sample, alphas=wrong.alphas))
    assert row["objects"][0]["measured"]["shape"] == "circle" and row["shape"] == 0.5
    assert row["motion"] == 1.0


def test_reversed_motion_fails_motion_adherence():
    sample = truth_sample()
    alphas, foregrounds = sample.alphas.copy(), sample.foregrounds.copy()
    alphas[:, :] = alphas[:, ::-1]
    foregrounds[:, :] = foregrounds[:, ::-1]
    row = score_sample(recomposed(sample, alphas=alphas, foregrounds=foregrounds))
    assert [o["measured"]["motion"] for o in row["objects"]] == ["right", "zoom out"] and row["motion"] == 0.0


def test_an_object_painted_into_the_background_is_leakage(perfect):
    sample = truth_sample()
    ghost = composite(sample.foregrounds[:1].astype(np.float32), np.roll(sample.alphas[:1], 20, axis=-1),
                      sample.background)
    row = score_sample(recomposed(sample, background=np.round(ghost).astype(np.uint8)))
    assert row["bg_leak"] > 0.01 > perfect["bg_leak"]


def test_background_texture_inside_the_matte_is_leakage(perfect):
    sample = truth_sample()
    foregrounds = sample.foregrounds.copy()
    foregrounds[1] = sample.background
    row = score_sample(recomposed(sample, foregrounds=foregrounds))
    assert row["fg_texture"] > 0.02 and perfect["fg_texture"] == 0.0


def test_a_shifted_matte_breaks_coherence(perfect):
    sample = truth_sample()
    shifted = replace(sample, alphas=np.roll(sample.alphas, 3, axis=-1))  # full and colours stay where they were
    row = score_sample(shifted)
    assert row["coherence"] > 0.003 > 2 * perfect["coherence"]


def test_a_blurred_matte_is_soft_and_wide(perfect):
    sample = truth_sample()
    blurred = np.stack([cv2.GaussianBlur(a, (0, 0), 1.5) for a in sample.alphas.reshape(-1, 64, 64)])
    row = score_sample(recomposed(sample, alphas=blurred.reshape(sample.alphas.shape)))
    assert row["alpha_edge_width"] > 2 * perfect["alpha_edge_width"]
    assert row["alpha_soft"] > 0.05 and perfect["alpha_soft"] == 0.0
    without_truth = score_sample(replace(recomposed(sample, alphas=blurred.reshape(sample.alphas.shape)),
                                         truth_alphas=None))
    assert without_truth["alpha_soft"] > 0.05


def test_a_flickering_foreground_is_temporally_inconsistent(perfect):
    sample = truth_sample()
    flicker = np.where(np.arange(len(sample.full)) % 2, 0.6, 1.0)[None, :, None, None, None]
    foregrounds = np.round(sample.foregrounds * flicker).astype(np.uint8)
    row = score_sample(recomposed(sample, foregrounds=foregrounds))
    assert row["temporal_change"] > 0.1 and perfect["temporal_change"] == 0.0


def test_a_missing_layer_counts_as_wrong():
    sample = truth_sample()
    row = score_sample(replace(sample, alphas=sample.alphas[:1], foregrounds=sample.foregrounds[:1],
                               truth_alphas=None))
    assert row["objects"][1]["measured"] is None and row["colour"] == row["shape"] == row["motion"] == 0.5


def test_an_empty_matte_reads_as_nothing_and_counts_as_wrong():
    sample = truth_sample()
    alphas = sample.alphas.copy()
    alphas[1] = 0.0  # a generated layer with no object at all
    row = score_sample(recomposed(sample, alphas=alphas))
    assert object_colour(sample.foregrounds[1], alphas[1]) is None
    assert row["objects"][1]["measured"]["colour"] is None and row["objects"][1]["colour"] == 0.0
    assert row["objects"][0]["colour"] == 1.0


def test_summary_counts_objects_and_splits(perfect):
    sample = truth_sample()
    foregrounds = sample.foregrounds.copy()
    foregrounds[:] = np.round(object_rgb("cyan")).astype(np.uint8)
    held_out = ToyScene((ToyObject("circle", "blue", "right"),), SCENE.background)
    evaluation = evaluate_generation([sample, recomposed(sample, foregrounds=foregrounds), truth_sample(held_out)])
    summary = evaluation.summary()
    assert summary["samples"] == 3 and summary["objects"] == 5
    assert summary["colour_accuracy"] == pytest.approx(3 / 5) and summary["shape_accuracy"] == 1.0
    assert summary["by_split"]["test"]["samples"] == 1 and summary["by_split"]["train"]["colour_accuracy"] == 0.5


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out, train=3, test=3, seed=1, shard_size=3, progress=False)
    return out


def test_decoded_ground_truth_shards_score_perfectly(shards):
    summary = evaluate_generation(load_samples(shards)).summary()
    assert summary["samples"] == 6 and summary["by_split"]["test"]["samples"] == 3
    for name in ("colour", "shape", "motion", "texture", "bg_colour", "drift"):
        assert summary[f"{name}_accuracy"] == 1.0, name
    assert summary["coherence"] < 0.03 and summary["bg_leak"] < 0.005 and summary["fg_texture"] < 0.005
    assert summary["alpha_soft"] < 0.005 and summary["temporal_change"] < 0.005


def test_sample_folders_are_read_with_their_prompts(tmp_path):
    sample = truth_sample()
    captions = SCENE.captions()
    layers = {"full": sample.full / 255, "background": sample.background / 255,
              **{f"fg{k}": sample.foregrounds[k] / 255 for k in range(2)},
              **{f"alpha{k}": sample.alphas[k] for k in range(2)}}
    LayeredVideo(layers, 16.0, LayerPrompts(captions.full, captions.background, tuple(captions.foreground))).save(
        tmp_path / "samples" / "one")
    (loaded,) = load_samples(tmp_path / "samples")
    assert loaded.request == SCENE and loaded.key == "one"
    row = score_sample(loaded)
    assert row["colour"] == row["shape"] == row["motion"] == row["texture"] == 1.0 and row["coherence"] < 0.03
    with pytest.raises(FileNotFoundError):
        list(load_samples(tmp_path / "nothing"))


def test_eval_generation_command(shards, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval-generation", "--samples", str(shards / "test"), "--json",
                                 str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    assert "shape_accuracy" in result.output and "test" in result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["summary"]["samples"] == 3 and len(scores["rows"]) == 3
    missing = runner.invoke(app, ["eval-generation", "--samples", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
