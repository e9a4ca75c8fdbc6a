"""`evaluate` and the ground-truth readers on samples whose answer is known."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from vidlayer.clip import Captions, Clip, VideoInfo
from vidlayer.config import parse_pipeline
from vidlayer.evaluation.evaluate import evaluate
from vidlayer.evaluation.truth import load_truth, truth_folders
from vidlayer.synth import render_scene, save_ground_truth

SIZE = (96, 64)  # width, height


def sample_from(key: str, full, background, foregrounds, alphas, source_frames, fps: float = 8.0) -> dict:
    """A built sample holding the given layers, written by the real write stage."""
    frames, height, width = full.shape[:3]
    clip = Clip(key=f"{key}_s00w00", input_key=key, path=f"/raw/{key}.mp4", source=f"{key}.mp4",
                captions=Captions("c", ["f"] * len(alphas), "b"), span=(0.0, frames / fps), fps=fps,
                info=VideoInfo(width, height, fps, frames, frames / fps, "h264", "pyav"),
                frames=full, source_frames=np.asarray(source_frames), background=background,
                foregrounds=foregrounds, alphas=alphas, metrics={"quality_confidence": 0.5})
    write = parse_pipeline({"stages": [{"stage": "write", "backend": "webdataset", "params": {"preset": "veryfast"}}]}).stages[0].build()
    return write.process(clip).sample


def write_build(folder: Path, samples: list[dict]) -> Path:
    (folder / "shards").mkdir(parents=True)
    with wds.TarWriter(str(folder / "shards" / "shard-000000.tar")) as sink:
        for sample in samples:
            sink.write(sample)
    return folder


@pytest.fixture(scope="module")
def scene():
    return render_scene(5, 0, width=SIZE[0], height=SIZE[1], fps=8.0, seconds=1.0, num_foregrounds=2)


@pytest.fixture(scope="module")
def synth_truth(scene, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("truth")
    save_ground_truth(scene, root / "gt" / scene.key)
    return root


def as_sample(scene, alphas=None, frames=None) -> dict:
    frames = np.arange(len(scene.full)) if frames is None else np.asarray(frames)
    alphas = scene.alphas if alphas is None else alphas
    return sample_from(scene.key, scene.full[frames], scene.background[frames], scene.foregrounds[:, frames],
                       alphas[:, frames], frames)


def test_the_truth_itself_scores_perfectly(scene, synth_truth, tmp_path):
    build = write_build(tmp_path / "build", [as_sample(scene, frames=[1, 3, 4, 6])])
    [row] = evaluate(build, synth_truth).rows
    assert row["status"] == "scored" and (row["layers"], row["true_layers"]) == (2, 2)
    assert row["J"] == row["F"] == row["J_instances"] == 1.0
    assert row["confidence"] == 0.5  # the quality gate's expected J, as recorded
    assert row["alpha_mse"] == pytest.approx(0, abs=1e-9)  # lossless mattes
    # Only the H.264 (crf 18, 4:2:0 at 96x64) encoding of the colour layers is lost.
    assert row["bg_psnr_covered"] > 30 and row["bg_psnr_visible"] > 30 and row["fg_psnr"] > 25
    assert row["composite_error"] < 0.01


def test_a_shifted_matte_scores_worse(scene, synth_truth, tmp_path):
    shifted = np.roll(scene.alphas, 6, axis=-1)
    exact = evaluate(write_build(tmp_path / "a", [as_sample(scene)]), synth_truth).rows[0]
    moved = evaluate(write_build(tmp_path / "b", [as_sample(scene, alphas=shifted)]), synth_truth).rows[0]
    assert moved["J"] < exact["J"] - 0.1 and moved["F"] < exact["F"]
    assert moved["alpha_mse"] > 0.005 and moved["composite_error"] > exact["composite_error"]


def test_layers_in_another_order_still_match(scene, synth_truth, tmp_path):
    reordered = sample_from(scene.key, scene.full, scene.background, scene.foregrounds[::-1], scene.alphas[::-1],
                            np.arange(len(scene.full)))
    row = evaluate(write_build(tmp_path / "b", [reordered]), synth_truth).rows[0]
    assert row["J"] == 1.0 and row["J_instances"] == 1.0 and row["fg_psnr"] > 25


def test_frames_are_lined_up_by_source_frame(scene, synth_truth, tmp_path):
    """A sample that claims other source frames than it holds is caught by the scores."""
    truth = load_truth(synth_truth / "gt" / scene.key, np.array([2, 5]), SIZE)
    assert np.array_equal(truth.alphas, np.round(scene.alphas[:, [2, 5]] * 255) / 255)
    frames = np.arange(len(scene.full))
    lying = sample_from(scene.key, scene.full, scene.background, scene.foregrounds, scene.alphas, frames[::-1])
    row = evaluate(write_build(tmp_path / "b", [lying]), synth_truth).rows[0]
    assert row["J"] < 0.9


def davis_truth(folder: Path, masks: np.ndarray) -> Path:
    clip = folder / "gt" / "walk"
    clip.mkdir(parents=True)
    for i, mask in enumerate(masks):
        cv2.imwrite(str(clip / f"{i:04d}.png"), (mask * 255).astype(np.uint8))
    return folder


def moving_square(frames: int, width: int, height: int) -> np.ndarray:
    """[T, H, W] a 30-pixel square stepping 6 pixels right per frame."""
    masks = np.zeros((frames, height, width), bool)
    for t in range(frames):
        masks[t, 10:40, 5 + 6 * t: 35 + 6 * t] = True
    return masks


def test_davis_masks_give_segmentation_scores_only(tmp_path):
    """DAVIS annotations at twice the sample's size; the sample holds source frames 1, 3 and 5."""
    masks = moving_square(8, *SIZE)
    big = [cv2.resize(m.astype(np.uint8), (2 * SIZE[0], 2 * SIZE[1]), interpolation=cv2.INTER_NEAREST) for m in masks]
    truth = davis_truth(tmp_path / "davis", np.stack(big))
    grey = np.full((3, SIZE[1], SIZE[0], 3), 100, np.uint8)
    alphas = masks[None, [1, 3, 5]].astype(np.float32)
    build = write_build(tmp_path / "build", [sample_from("walk", grey, grey, grey[None], alphas, [1, 3, 5])])
    [row] = evaluate(build, truth).rows
    assert row["J"] == pytest.approx(1.0) and row["F"] == pytest.approx(1.0)
    assert "alpha_mse" not in row and "bg_psnr_covered" not in row
    off = write_build(tmp_path / "off", [sample_from("walk", grey, grey, grey[None], alphas, [2, 4, 6])])
    assert evaluate(off, truth).rows[0]["J"] < 0.8


def test_a_real_build_with_a_dropped_clip(inline_build, raw):
    """The default pipeline's own output: dropped clips get rows and count as 0 over all clips."""
    out, summary = inline_build
    evaluation = evaluate(out, raw.parent)
    statuses = {r["clip"]: r["status"] for r in evaluation.rows}
    written = summary.samples["written"]
    assert len(statuses) == 3 and list(statuses.values()).count("scored") == written > 0
    dropped = [r for r in evaluation.rows if r["status"] == "dropped"]
    assert all(r["reason"] for r in dropped)
    means = evaluation.summary()
    assert means["J"] > 0.7 and means["alpha_mse"] < 0.02
    assert means["J_all_clips"] == pytest.approx(means["J"] * written / 3)


def test_missing_inputs_are_clear_errors(tmp_path, synth_truth):
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        truth_folders(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="not a build output"):
        evaluate(tmp_path, synth_truth)
