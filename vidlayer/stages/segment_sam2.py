"""SAM 2 video segmentation: each subject is prompted once and tracked through the clip by SAM 2's memory.

1. Prompts: the grounding stage's boxes when it found subjects, else the masks of the weights-free
   motion segmenter (`segment.motion`), each layer at the frame where it is largest. The motion
   segmenter's motion estimate is then handed on as the clip's motion instead of estimating it twice.
2. Tracking: the official `sam2` video predictor propagates every object forward from the earliest
   prompt frame to the last frame, then backward from it to the first, so frames before a prompt get
   masks too. Output masks do not overlap: a pixel belongs to the object with the highest logit.
3. Layers: objects that never show, or cover less than `min_area_fraction` of the frame on average
   while seen, are dropped; nothing left drops the clip (`no_foreground`, as the motion backend).

Metrics: `segment_confidence` (see `confidence`), `segment_coverage` (mean share of the frame the
layers cover), `segment_instances` (number of layers) and `segment_box_prompts` (grounding boxes
used; 0 when the motion masks prompted SAM 2).

`sam2` is imported only where a model is loaded or run: it is installed apart (its CUDA extension is not built) and its
import initialises Hydra's global config module, neither of which the other backends should depend on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from unittest import mock

import numpy as np
import torch
from PIL import Image

from vidlayer.clip import Clip, Drop, Prompt
from vidlayer.devices import pick_device, pick_dtype
from vidlayer.motion import estimate_motion
from vidlayer.stages.base import Resources, Stage, register
from vidlayer.stages.segment import MotionSegmenter, MotionSegmentParams

if TYPE_CHECKING:
    from sam2.sam2_video_predictor import SAM2VideoPredictor

# What sam2's `build_sam2_video_predictor` sets on a model config (the predictor class and its default
# post-processing), plus non-overlapping output masks since a pixel belongs to one layer. Applied here
# rather than through that function because it only takes configs packaged in sam2, not a .yaml path.
# `fill_hole_area` needs sam2's CUDA extension; without it sam2 warns once and skips the hole filling.
PREDICTOR_SETTINGS = {
    "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
    "non_overlap_masks": True,
}
# The normalisation of sam2's `load_video_frames` (ImageNet statistics).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
STABILITY_OFFSET = 1.0  # logit margin of SAM's stability score (its automatic mask generator's default)


@dataclass
class Sam2SegmentParams:
    config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"  # sam2 Hydra model config: a .yaml path or a packaged name
    checkpoint: str = ""  # weights for it: a .safetensors state dict, or SAM 2's own .pt (read with weights_only)
    device: str = "auto"  # auto: the worker's GPU, else the CPU
    dtype: str = "auto"  # autocast dtype: auto (bf16 on GPUs, fp32 on CPUs), float32, bfloat16 or float16
    prompt: Literal["auto", "boxes", "motion"] = "auto"  # auto: the grounding boxes if there are any, else motion masks
    max_instances: int = 2  # at most this many foreground layers
    work_short_side: int = 240  # motion (and motion prompts) are estimated with the short side at this many pixels
    min_area_fraction: float = 0.002  # a layer covers at least this share of the frame, on average while seen


@register
class Sam2Segmenter(Stage):
    stage = "segment"
    backend = "sam2"
    Params = Sam2SegmentParams
    default_resources = Resources(cpus=1)

    def setup(self) -> None:
        """Load the predictor once per worker (never in `__init__`: stages are pickled to workers)."""
        p: Sam2SegmentParams = self.params
        if not p.checkpoint:
            raise ValueError("segment.sam2 needs `checkpoint`: SAM 2 weights (.pt or .safetensors) for `config`")
        self.device = pick_device(p.device)
        self.dtype = pick_dtype(p.dtype, self.device)
        self.model = load_predictor(p.config, p.checkpoint, self.device)

    def process(self, clip: Clip) -> Clip:
        p: Sam2SegmentParams = self.params
        frames = clip.frames
        mode = p.prompt if p.prompt != "auto" else ("boxes" if clip.prompts else "motion")
        if mode == "boxes":
            if not clip.prompts:
                raise Drop("no_foreground", "prompt is 'boxes' but the grounding stage found no subject in this clip")
            boxes = sorted(clip.prompts, key=lambda prompt: -prompt.score)[: p.max_instances]
            motion = estimate_motion(frames, p.work_short_side)
        else:
            # Drops the clip (no_foreground) when nothing moves on its own.
            segmenter = MotionSegmenter(MotionSegmentParams(work_short_side=p.work_short_side,
                                                            max_instances=p.max_instances,
                                                            min_area_fraction=p.min_area_fraction))
            found = segmenter.process(dataclasses.replace(clip, metrics={}))
            motion = found.motion
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            state = init_state(self.model, frames)
            if mode == "boxes":
                add_boxes(self.model, state, boxes)
            else:
                add_masks(self.model, state, found.masks)
            masks, stability = track(self.model, state)
            presence, tracked = object_presence(state)
        area = masks.mean(axis=(2, 3))
        seen = area > 0
        keep = seen.any(axis=1) & (area.sum(axis=1) / np.maximum(seen.sum(axis=1), 1) >= p.min_area_fraction)
        if not keep.any():
            raise Drop("no_foreground", f"SAM 2 lost all {len(masks)} prompted subjects: none covers "
                       f">= {p.min_area_fraction} of the frame on average while seen")
        masks = masks[keep]
        clip.masks, clip.motion = masks, motion
        clip.metrics.update(segment_confidence=confidence(presence[keep], stability[keep], tracked[keep]),
                            segment_coverage=float(masks.any(axis=0).mean()),
                            segment_instances=float(len(masks)),
                            segment_box_prompts=float(len(boxes) if mode == "boxes" else 0))
        return clip


def load_predictor(config: str, checkpoint: str | Path, device: torch.device) -> SAM2VideoPredictor:
    """SAM 2's video predictor built by its own Hydra machinery from `config`, with the weights of `checkpoint`."""
    from hydra import compose
    from hydra.errors import MissingConfigException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import_module("sam2")  # initialises Hydra's config module to sam2's packaged configs

    if Path(config).is_file():
        cfg = OmegaConf.load(config)
    else:
        try:
            cfg = compose(config_name=config)
        except MissingConfigException:
            raise FileNotFoundError(f"SAM 2 config {config!r} is neither a file nor a config packaged in sam2 "
                                    f"(such as configs/sam2.1/sam2.1_hiera_l.yaml)") from None
    for key, value in PREDICTOR_SETTINGS.items():
        OmegaConf.update(cfg.model, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    load_weights(model, read_state_dict(Path(checkpoint)), f"checkpoint {checkpoint} does not fit config {config}")
    model.memory_attention.register_forward_pre_hook(memory_in_weight_dtype, with_kwargs=True)
    return model.to(device).eval()


def memory_in_weight_dtype(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Hand SAM 2's memory attention its memory in the dtype of its weights.

    The predictor stores past frames' memories in bf16. Joined with the object pointers (fp32) they
    become fp32; but an object tracked towards its prompt (no pointer behind it yet, as when objects
    are prompted on different frames) attends to the bf16 memories alone, which fails outside bf16
    autocast (facebookresearch/sam2 issues 308, 577). Casting does what the join does otherwise.
    """
    kwargs["memory"] = kwargs["memory"].to(next(module.parameters()).dtype)
    return args, kwargs


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors state dict, or the "model" entry of SAM 2's own .pt files, without unpickling any code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a SAM 2 checkpoint: it has no 'model' state dict")
    return checkpoint["model"]


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], context: str) -> None:
    """Load `state` into `model`, refusing (with the offending names) any missing, unexpected or reshaped weight."""
    own = model.state_dict()
    problems = {
        "missing": sorted(own.keys() - state.keys()),
        "unexpected": sorted(state.keys() - own.keys()),
        "with another shape": sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape),
    }
    found = [f"{len(names)} {kind} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
             for kind, names in problems.items() if names]
    if found:
        raise ValueError(f"{context}: {'; '.join(found)} weights")
    model.load_state_dict(state)


def video_tensor(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """[T, 3, S, S] float32: what sam2's `load_video_frames` makes of a JPEG folder of these frames (same
    PIL resize, scaling and normalisation), without the JPEG round trip."""
    resized = np.stack([np.asarray(Image.fromarray(f).resize((image_size, image_size))) for f in frames])
    images = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
    return (images - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]


def init_state(predictor: SAM2VideoPredictor, frames: np.ndarray) -> dict:
    """SAM 2's inference state for frames held in memory.

    `init_state` only takes a JPEG folder or an MP4, read by `load_video_frames`; writing each clip out
    would add a lossy re-encode and disk traffic. So for this one call the predictor module's
    `load_video_frames` returns the tensor it would have built, and the state is still made by SAM 2's
    own `init_state`, whatever it holds in a given release. (A worker runs one clip at a time.)
    """
    from sam2 import sam2_video_predictor

    images = video_tensor(frames, predictor.image_size).to(predictor.device)
    height, width = frames.shape[1:3]
    with mock.patch.object(sam2_video_predictor, "load_video_frames", return_value=(images, height, width)):
        return predictor.init_state(video_path="<frames in memory>")


def add_boxes(predictor: SAM2VideoPredictor, state: dict, boxes: list[Prompt]) -> None:
    """One object per grounding box, prompted on the frame the box was found in."""
    for obj_id, prompt in enumerate(boxes):
        predictor.add_new_points_or_box(state, frame_idx=prompt.frame, obj_id=obj_id,
                                        box=np.asarray(prompt.box, np.float32))


def add_masks(predictor: SAM2VideoPredictor, state: dict, masks: np.ndarray) -> None:
    """One object per layer of [K, T, H, W] masks, prompted with its mask where it is largest."""
    for obj_id, layer in enumerate(masks):
        frame = int(layer.sum(axis=(1, 2)).argmax())
        predictor.add_new_mask(state, frame_idx=frame, obj_id=obj_id, mask=layer[frame])


def track(predictor: SAM2VideoPredictor, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """[K, T, H, W] bool masks of every prompted object, and [K, T] SAM's stability score of each mask.

    Forward from the earliest prompt frame to the end, then backward from it to the start (that frame
    is visited twice; the backward pass, which also updates the predictor's state, wins).
    """
    from sam2.utils.amg import calculate_stability_score

    num_objects, num_frames = len(state["obj_ids"]), state["num_frames"]
    masks = np.zeros((num_objects, num_frames, state["video_height"], state["video_width"]), bool)
    stability = np.zeros((num_objects, num_frames), np.float32)
    for reverse in (False, True):
        for t, _, logits in predictor.propagate_in_video(state, reverse=reverse):
            logits = logits[:, 0].float()
            masks[:, t] = (logits > 0).cpu().numpy()
            # 0/0 where the object is absent: no mask to be sure of.
            score = calculate_stability_score(logits, 0.0, STABILITY_OFFSET)
            stability[:, t] = torch.nan_to_num(score, nan=0.0).cpu().numpy()
    return masks, stability


def object_presence(state: dict) -> tuple[np.ndarray, np.ndarray]:
    """[K, T] SAM 2's probability that each object is in view, from its occlusion head, and [K, T] bool
    where that is a prediction (tracked frames) rather than the prompt."""
    num_objects, num_frames = len(state["obj_ids"]), state["num_frames"]
    presence = np.zeros((num_objects, num_frames), np.float32)
    tracked = np.zeros((num_objects, num_frames), bool)
    for k in range(num_objects):
        for t, out in state["output_dict_per_obj"][k]["non_cond_frame_outputs"].items():
            presence[k, t] = torch.sigmoid(out["object_score_logits"].float()).item()
            tracked[k, t] = True
    return presence, tracked


def confidence(presence: np.ndarray, stability: np.ndarray, tracked: np.ndarray) -> float:
    """How sure SAM 2 is of the layers, in [0, 1], from its own scores over the frames it tracked.

    Per layer and tracked frame: the probability its occlusion head gives that the object is in view
    (low when it loses the subject) times the mask's stability score (the IoU of the mask thresholded
    at logits +1 and -1, as SAM ranks masks: low when many pixels are borderline). A subject that
    leaves the frame counts as lost. The mask decoder's predicted IoU would serve too, but the video
    predictor keeps no per-frame record of it. Prompt frames are excluded: their masks were given.
    """
    if not tracked.any():
        return 0.0
    return float((presence * stability)[tracked].mean())
