"""The `segment.sam2` backend, run through its real loading code on a tiny random SAM 2.

Random weights give arbitrary masks, so these tests check what the stage does around the model:
which prompts it builds, that every frame is tracked in both directions, how weights are loaded,
and the shapes and metrics it hands on.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vidlayer.clip import Captions, Clip, Drop, Prompt
from vidlayer.random_models.sam2 import write_tiny_sam2
from vidlayer.stages import segment_sam2
from vidlayer.stages.base import registered
from vidlayer.stages.segment import MotionSegmenter
from vidlayer.stages.segment_sam2 import (Sam2Segmenter, Sam2SegmentParams, confidence, init_state, load_predictor,
                                          read_state_dict, video_tensor)

FRAMES = 17
SEED = 1  # the tiny model's masks then cover a good share of every frame (seed 0's cover a few pixels)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_sam2(tmp_path_factory.mktemp("sam2"), seed=SEED)


def params(tiny: Path, **overrides) -> Sam2SegmentParams:
    return Sam2SegmentParams(config=str(tiny / "config.yaml"), checkpoint=str(tiny / "model.safetensors"), **overrides)


def segmenter(tiny: Path, **overrides) -> Sam2Segmenter:
    stage = Sam2Segmenter(params(tiny, **overrides))
    stage.setup()
    return stage


def make_clip(frames: np.ndarray, prompts: list[Prompt] | None = None) -> Clip:
    return Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, fps=16.0,
                prompts=prompts or [])


def spy(monkeypatch, model: torch.nn.Module, name: str) -> list[dict]:
    """The keyword arguments of every call of `model.<name>`, which still runs."""
    calls, method = [], getattr(model, name)

    def record(*args, **kwargs):
        calls.append(kwargs)
        return method(*args, **kwargs)

    monkeypatch.setattr(model, name, record)
    return calls


def spy_propagation(monkeypatch, model: torch.nn.Module) -> list[tuple[bool, int, np.ndarray]]:
    """(reverse, frame, [K, H, W] masks) of every frame the predictor yields."""
    seen, propagate = [], model.propagate_in_video

    def record(state, **kwargs):
        for t, obj_ids, logits in propagate(state, **kwargs):
            seen.append((kwargs.get("reverse", False), t, (logits[:, 0] > 0).cpu().numpy()))
            yield t, obj_ids, logits

    monkeypatch.setattr(model, "propagate_in_video", record)
    return seen


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_registered_and_picklable_before_setup(tiny):
    assert registered()[("segment", "sam2")] is Sam2Segmenter
    stage = Sam2Segmenter(params(tiny))
    copy = pickle.loads(pickle.dumps(stage))
    assert copy.params == stage.params and not hasattr(copy, "model")
    copy.setup()  # what each worker does once it has unpickled the stage
    assert type(copy.model).__name__ == "SAM2VideoPredictor" and not copy.model.training
    with pytest.raises(ValueError, match="needs `checkpoint`"):
        Sam2Segmenter(Sam2SegmentParams()).setup()


def test_box_prompts_give_a_layer_each_up_to_max_instances(tiny, square_frames, monkeypatch):
    frames = square_frames(FRAMES)
    stage = segmenter(tiny, max_instances=2, min_area_fraction=0.0)
    added = spy(monkeypatch, stage.model, "add_new_points_or_box")
    prompts = [Prompt("cat", 8, (10.0, 20.0, 90.0, 110.0), 0.4), Prompt("dog", 3, (150.0, 50.0, 250.0, 150.0), 0.9),
               Prompt("hat", 12, (0.0, 100.0, 60.0, 200.0), 0.2)]
    clip = stage.process(make_clip(frames, prompts))
    # The two most confident boxes, each on the frame it was found in, one object each.
    assert [(c["obj_id"], c["frame_idx"], tuple(c["box"])) for c in added] == [
        (0, 3, (150.0, 50.0, 250.0, 150.0)), (1, 8, (10.0, 20.0, 90.0, 110.0))]
    num_frames, height, width = frames.shape[:3]
    assert clip.masks.shape == (2, num_frames, height, width) and clip.masks.dtype == bool
    assert clip.masks.any(axis=(2, 3)).all()  # this seed's random masks show in every frame
    assert clip.masks.sum(axis=0).max() == 1  # a pixel belongs to one layer
    # Motion for the later stages, estimated here since no motion segmenter ran.
    assert clip.motion.flow.shape == (num_frames - 1, height, width, 2)
    assert clip.motion.homographies.shape == (num_frames - 1, 3, 3)
    assert 0.0 <= clip.metrics["segment_confidence"] <= 1.0
    assert clip.metrics["segment_coverage"] == pytest.approx(clip.masks.any(axis=0).mean())
    assert clip.metrics["segment_instances"] == 2


def test_without_grounding_the_motion_segmenters_layers_are_the_prompts(tiny, square_frames, monkeypatch):
    found = []

    class Recorded(MotionSegmenter):
        def process(self, clip: Clip) -> Clip:
            found.append((self.params, super().process(clip)))
            return found[-1][1]

    monkeypatch.setattr(segment_sam2, "MotionSegmenter", Recorded)
    stage = segmenter(tiny, max_instances=2, work_short_side=200)
    added = spy(monkeypatch, stage.model, "add_new_mask")
    clip = stage.process(make_clip(square_frames(FRAMES)))
    [(motion_params, reference)] = found
    assert (motion_params.max_instances, motion_params.work_short_side) == (2, 200)
    assert len(clip.masks) == len(reference.masks) == len(added) >= 1
    for k, call in enumerate(added):
        largest = int(reference.masks[k].sum(axis=(1, 2)).argmax())
        assert call["obj_id"] == k and call["frame_idx"] == largest
        assert np.array_equal(call["mask"], reference.masks[k, largest])
        # SAM 2 returns a mask prompt as the mask of its frame (through its quarter-resolution output).
        assert iou(clip.masks[k, largest], reference.masks[k, largest]) > 0.7
    assert clip.motion is reference.motion  # reused, not estimated twice


def test_frames_before_the_prompt_are_tracked_backward(tiny, square_frames, monkeypatch):
    frames = square_frames(FRAMES)
    stage = segmenter(tiny, min_area_fraction=0.0)
    yielded = spy_propagation(monkeypatch, stage.model)
    prompt = 10
    clip = stage.process(make_clip(frames, [Prompt("cat", prompt, (100.0, 80.0, 200.0, 160.0), 0.9)]))
    assert [t for reverse, t, _ in yielded if not reverse] == list(range(prompt, FRAMES))
    assert [t for reverse, t, _ in yielded if reverse] == list(range(prompt, -1, -1))
    # Each frame's layer is what the predictor said of it last, before the prompt frame too.
    last = {t: masks for _, t, masks in yielded}
    assert all(np.array_equal(clip.masks[:, t], last[t]) for t in range(FRAMES))
    assert clip.masks[:, :prompt].any(axis=(0, 2, 3)).all()


def test_objects_prompted_on_different_frames_track_in_float32(tiny, square_frames):
    """An object tracked towards its later prompt attends to bf16 memories alone; in float32 on the CPU
    that failed inside sam2 (mat1 and mat2 must have the same dtype) until the stage cast them."""
    frames = square_frames(9)
    prompts = [Prompt("a", 1, (0.0, 0.0, 90.0, 90.0), 0.9), Prompt("b", 6, (150.0, 50.0, 250.0, 150.0), 0.8)]
    clip = segmenter(tiny, min_area_fraction=0.0).process(make_clip(frames, prompts))
    assert clip.masks.shape[:2] == (2, 9)


def test_in_memory_frames_match_sams_own_loader(tiny, square_frames, tmp_path):
    from sam2.utils.misc import load_video_frames

    for t, frame in enumerate(square_frames(3)):
        Image.fromarray(frame).save(tmp_path / f"{t:05d}.jpg")
    decoded = np.stack([np.asarray(Image.open(tmp_path / f"{t:05d}.jpg").convert("RGB")) for t in range(3)])
    images, height, width = load_video_frames(str(tmp_path), 128, offload_video_to_cpu=True)
    assert torch.allclose(video_tensor(decoded, 128), images, atol=1e-6)
    # The predictor's own init_state takes them as if it had read the folder.
    state = init_state(load_predictor(str(tiny / "config.yaml"), tiny / "model.safetensors", CPU), decoded)
    assert torch.allclose(state["images"], images, atol=1e-6)
    assert (state["num_frames"], state["video_height"], state["video_width"]) == (3, height, width)


class Opaque:
    """Any class a checkpoint would have to import to be unpickled."""


def test_official_pt_checkpoints_load_without_unpickling_code(tiny, tmp_path):
    state = read_state_dict(tiny / "model.safetensors")
    torch.save({"model": state}, tmp_path / "sam2.pt")
    model = load_predictor(str(tiny / "config.yaml"), tmp_path / "sam2.pt", CPU)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    torch.save({"model": state, "extra": Opaque()}, tmp_path / "opaque.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_state_dict(tmp_path / "opaque.pt")
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="no 'model' state dict"):
        read_state_dict(tmp_path / "bare.pt")


def test_a_checkpoint_that_does_not_fit_its_config_is_refused_by_name(tiny, tmp_path):
    state = read_state_dict(tiny / "model.safetensors")
    del state["no_mem_embed"]
    state["extra.weight"] = torch.zeros(1)
    state["maskmem_tpos_enc"] = torch.zeros(3)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"does not fit config .*: 1 missing \(no_mem_embed\); 1 unexpected "
                                         r"\(extra.weight\); 1 with another shape \(maskmem_tpos_enc\) weights"):
        load_predictor(str(tiny / "config.yaml"), tmp_path / "bad.safetensors", CPU)
    # A config packaged in sam2 is found by name: the tiny weights do not fit the real tiny model.
    with pytest.raises(ValueError, match="does not fit config configs/sam2.1/sam2.1_hiera_t.yaml: .* missing"):
        load_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", tiny / "model.safetensors", CPU)
    with pytest.raises(FileNotFoundError, match="neither a file nor a config packaged in sam2"):
        load_predictor("configs/sam2.1/no_such_model.yaml", tiny / "model.safetensors", CPU)


def test_clips_without_a_subject_are_dropped(tiny, square_frames):
    frames = square_frames(FRAMES)
    with pytest.raises(Drop) as dropped:
        segmenter(tiny, prompt="boxes").process(make_clip(frames))  # the grounding stage found nothing
    assert dropped.value.reason == "no_foreground"
    with pytest.raises(Drop) as dropped:
        segmenter(tiny).process(make_clip(np.repeat(frames[:1], 8, axis=0)))  # nothing moves
    assert dropped.value.reason == "no_foreground"


def test_confidence_is_presence_times_stability_over_tracked_frames():
    presence = np.array([[1.0, 1.0, 0.5], [0.0, 0.9, 0.9]])
    stability = np.array([[0.2, 0.8, 1.0], [1.0, 1.0, 0.0]])
    tracked = np.array([[False, True, True], [False, True, True]])  # frame 0 holds the prompts
    assert confidence(presence, stability, tracked) == pytest.approx((0.8 + 0.5 + 0.9 + 0.0) / 4)
