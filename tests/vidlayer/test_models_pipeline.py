"""`pipelines/models.yaml` end to end: tiny random detector, SAM 2 and VLM checkpoints saved to folders and
loaded by path through the stages' real loading code, on `vidlayer synth` clips, inline and on Ray."""

import json
from pathlib import Path

import pytest
import webdataset as wds

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.evaluation.evaluate import Prediction
from vidlayer.io.manifest import read_manifest
from vidlayer.layers import recomposite_error
from vidlayer.random_models import tiny_models_overrides
from vidlayer.random_models.vace import write_tiny_vace


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> list[str]:
    """The overrides that point the models pipeline at tiny random checkpoints (and open its quality
    gate, since random layers would not pass it)."""
    return tiny_models_overrides(tmp_path_factory.mktemp("checkpoints"))


def models_pipeline(tiny_models: list[str], small: list[str], *extra: str):
    return load_pipeline("models", [*small, *tiny_models, *extra])


def samples(out: Path) -> list[dict]:
    return [s for shard in sorted((out / "shards").glob("*.tar")) for s in wds.WebDataset(str(shard), shardshuffle=False)]


@pytest.fixture(scope="module")
def boxed_build(raw, tiny_models, small, tmp_path_factory):
    """Every detection counts (threshold 0), so SAM 2 is prompted with the grounding boxes."""
    out = tmp_path_factory.mktemp("models") / "boxes"
    return out, build(raw, out, models_pipeline(tiny_models, small, "ground.score_threshold=0"), executor="inline")


def test_every_clip_becomes_a_layered_sample_in_valid_shards(boxed_build):
    out, summary = boxed_build
    assert summary.inputs == {"written": 3}
    written = samples(out)
    assert len(written) == 3
    for sample in written:
        layers = Prediction.from_sample({**sample, "json": json.loads(sample["json"])})
        k = layers.meta["num_foregrounds"]
        assert 1 <= k <= 2 and layers.foregrounds.shape[:2] == layers.alphas.shape[:2] == (k, 17)
        assert layers.full.shape == layers.background.shape == layers.foregrounds.shape[1:]
        # Random masks cover much of the frame, so H.264's losses in every layer add up to more than
        # the default pipeline's 0.02.
        assert recomposite_error(layers.full, layers.foregrounds, layers.alphas, layers.background).mean() < 0.05


def test_the_grounding_boxes_prompt_sam2_one_layer_each(boxed_build):
    out, _ = boxed_build
    for sample in samples(out):
        metrics = json.loads(sample["json"])["metrics"]
        assert metrics["ground_subjects"] >= 1
        assert metrics["segment_box_prompts"] == metrics["ground_subjects"]
        assert metrics["segment_instances"] <= metrics["segment_box_prompts"]


def test_malformed_vlm_answers_are_retried_then_fall_back_and_are_marked(boxed_build):
    """A random VLM never writes the JSON asked for: 1 + 2 retries, then the caption split, marked as such."""
    out, _ = boxed_build
    for sample in samples(out):
        meta = json.loads(sample["json"])
        assert meta["metrics"]["caption_attempts"] == 3 and meta["metrics"]["caption_fallback"] == 1
        assert meta["captions_derived"]["vlm_fallback"] is True
        captions = meta["captions"]
        assert len(captions["foreground"]) == meta["num_foregrounds"]
        assert all(captions["foreground"]) and captions["background"] and captions["full"]


def test_a_qc_model_without_a_verdict_keeps_the_clips_and_marks_them(boxed_build):
    """The random VLM never writes the verdict either: 1 + 2 attempts, then the clip is written, unjudged."""
    out, _ = boxed_build
    for sample in samples(out):
        metrics = json.loads(sample["json"])["metrics"]
        assert metrics["qc_attempts"] == 3 and metrics["qc_answered"] == 0
        assert "qc_ghost" not in metrics and "qc_matte_ok" not in metrics


def test_without_boxes_sam2_is_prompted_by_the_motion_masks(raw, tiny_models, small, tmp_path):
    pipeline = models_pipeline(tiny_models, small, "ground.score_threshold=2")  # scores are at most 1
    summary = build(raw, tmp_path / "out", pipeline, executor="inline")
    rows = [r for r in read_manifest(tmp_path / "out" / "manifest.parquet") if r["kind"] == "sample"]
    assert len(rows) == 3 and summary.inputs["failed"] == 0
    for sample in samples(tmp_path / "out"):
        metrics = json.loads(sample["json"])["metrics"]
        assert metrics["ground_subjects"] == 0 and metrics["segment_box_prompts"] == 0
        assert metrics["segment_instances"] >= 1


def test_on_ray_the_model_stages_run_in_actor_pools_and_write_the_same_samples(raw, tiny_models, small, boxed_build,
                                                                               tmp_path):
    """This machine has no GPU: the model stages' GPU requests are dropped and they run on CPU actors."""
    pipeline = models_pipeline(tiny_models, small, "ground.score_threshold=0")
    summary = build(raw, tmp_path / "out", pipeline, workers=2, executor="ray")
    assert summary.inputs == boxed_build[1].inputs
    ray_samples = {s["__key__"]: json.loads(s["json"]) for s in samples(tmp_path / "out")}
    inline_samples = {s["__key__"]: json.loads(s["json"]) for s in samples(boxed_build[0])}
    assert ray_samples.keys() == inline_samples.keys()
    for key, meta in ray_samples.items():
        assert meta["num_foregrounds"] == inline_samples[key]["num_foregrounds"]
    assert {"ground", "segment", "caption"} <= set(summary.stage_rates)


def test_the_vace_inpainter_fills_the_background_in_a_build(raw, tiny_models, small, tmp_path):
    vace = write_tiny_vace(tmp_path / "vace")
    pipeline = models_pipeline(tiny_models, small, "ground.score_threshold=0", "inpaint.backend=vace",
                               f"inpaint.model={vace}", "inpaint.steps=2")
    summary = build(raw, tmp_path / "out", pipeline, executor="inline")
    assert summary.inputs == {"written": 3}
    for sample in samples(tmp_path / "out"):
        layers = Prediction.from_sample({**sample, "json": json.loads(sample["json"])})
        assert 0 < layers.meta["metrics"]["inpaint_hole_fraction"] < 1
        assert layers.background.shape == layers.full.shape
