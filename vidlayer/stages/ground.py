"""Open-vocabulary grounding: boxes around the caption's subject(s), to prompt a segmenter with.

A segmenter prompted with a box segments what the caption is about; one left to its own devices
segments whatever moves. The subjects are the foreground captions where the source gave them,
else the subject phrase of the full caption (`split_caption`).

1. Detection: a few evenly spaced keyframes of every clip in a batch go through one forward
   pass of a zero-shot detector (`AutoModelForZeroShotObjectDetection`): OWLv2 scores every box
   against each phrase as its own query; Grounding DINO reads the phrases as one lower-case
   prompt, "phrase one. phrase two.", and scores every box against each token, so a box answers
   to the phrase whose tokens score highest. The library's post-processing turns the outputs
   into frame pixels and scores; boxes scoring `score_threshold` or less are ignored.
2. Selection, one prompt per phrase (a phrase names one subject), at most `max_instances`: the
   phrases are taken best score first, and each is located in every keyframe at its best box
   there that does not overlap (IoU above `nms_iou`) where an earlier phrase is in that frame.
   Its prompt is the best of these boxes, at whichever keyframe it scores highest (where the
   subject is seen best). A subject found by two phrases is so prompted once: the later phrase
   must find something else. Comparing boxes only within a frame is what makes this safe across
   frames, where the same subject has moved.

Metrics: `ground_subjects` (prompts found) and `ground_score` (their mean score, 0 without any).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from vidlayer.clip import Captions, Clip, Drop, Prompt
from vidlayer.devices import pick_device, pick_dtype
from vidlayer.stages.base import BatchedStage, Resources, register
from vidlayer.stages.caption import split_caption

# `model_type`s of the checkpoints this backend reads, by how they take phrases.
OWL_FAMILIES = ("owlv2",)  # one query per phrase
DINO_FAMILIES = ("grounding-dino",)  # the phrases as one prompt, scored per token


@dataclass
class DetectorGroundParams:
    model: str = ""  # local folder saved with save_pretrained (OWLv2 or Grounding DINO), or a hub id (required)
    device: str = "auto"  # auto: the worker's GPU if it has one, else the CPU
    dtype: str = "auto"  # auto, float32, bfloat16 or float16; auto: bf16 on GPUs, fp32 on CPUs
    keyframes: int = 3  # evenly spaced frames of each clip searched for the subjects
    score_threshold: float = 0.3  # boxes scoring this or less are ignored
    max_instances: int = 2  # prompts per clip at most, one per subject phrase
    nms_iou: float = 0.5  # boxes overlapping more than this (IoU) in a frame are the same subject
    batch_size: int = 4  # clips per forward pass (each brings `keyframes` images)
    on_miss: Literal["keep", "drop"] = "keep"  # no subject found: keep the clip without prompts, or drop it


class Detections(NamedTuple):
    """What the detector found in one image, above the threshold."""

    phrases: np.ndarray  # [N] int, index into the image's phrases
    scores: np.ndarray  # [N] float
    boxes: np.ndarray  # [N, 4] x0, y0, x1, y1 in image pixels


@register
class DetectorGround(BatchedStage):
    stage = "ground"
    backend = "detector"
    Params = DetectorGroundParams
    # Detectors are a few hundred million parameters at most: several workers can share a GPU,
    # so the pipeline YAML sets `resources.gpus` (e.g. 0.25) where there is one.
    default_resources = Resources(cpus=1.0)

    def setup(self) -> None:
        p: DetectorGroundParams = self.params
        if not p.model:
            raise ValueError("the ground backend `detector` needs `model`: a local OWLv2 or Grounding DINO folder "
                             "saved with save_pretrained, or a hub id (e.g. --set ground.model=/path/to/owlv2)")
        if p.keyframes < 1 or p.max_instances < 1:
            raise ValueError(f"keyframes and max_instances must be at least 1, got {p.keyframes} and {p.max_instances}")
        # Imported here: workers of other stages never pay for transformers' vision imports.
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self._device = pick_device(p.device)
        self._dtype = pick_dtype(p.dtype, self._device)
        self._processor = AutoProcessor.from_pretrained(p.model)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(p.model, dtype=self._dtype)
        self._family = model.config.model_type
        if self._family not in OWL_FAMILIES + DINO_FAMILIES:
            raise ValueError(f"{p.model} is a {self._family!r} model; the ground backend `detector` reads "
                             f"{', '.join(OWL_FAMILIES + DINO_FAMILIES)}")
        self._model = model.to(self._device).eval()

    def process_batch(self, clips: list[Clip]) -> list[Clip | Exception]:
        p: DetectorGroundParams = self.params
        phrases = [subject_phrases(clip.captions) for clip in clips]
        images = [(i, t) for i, clip in enumerate(clips) if phrases[i]
                  for t in keyframes(len(clip.frames), p.keyframes)]
        found: list[dict[int, Detections]] = [{} for _ in clips]
        for (i, t), detections in zip(images, self.detect([clips[i].frames[t] for i, t in images],
                                                          [phrases[i] for i, _ in images])):
            found[i][t] = detections
        results: list[Clip | Exception] = []
        for clip, clip_phrases, clip_found in zip(clips, phrases, found):
            prompts = choose_prompts(clip_phrases, clip_found, p.max_instances, p.nms_iou)
            clip.prompts = prompts
            clip.metrics.update(ground_subjects=float(len(prompts)),
                                ground_score=float(np.mean([prompt.score for prompt in prompts])) if prompts else 0.0)
            if prompts or p.on_miss == "keep":
                results.append(clip)
            elif not clip_phrases:
                results.append(Drop("no_subject_found", "the caption names no subject to search for"))
            else:
                results.append(Drop("no_subject_found", f"no box scored above {p.score_threshold} for any of "
                                    f"{clip_phrases} in {len(clip_found)} keyframes"))
        return results

    def detect(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[Detections]:
        """What the detector finds in each image for that image's phrases (boxes within the image).

        Images of one size go through the model together: a batch of different sizes would be
        padded to the largest, which changes what a Grounding DINO backbone sees near the border.
        """
        forward = self._owl if self._family in OWL_FAMILIES else self._dino
        results: list[Detections | None] = [None] * len(images)
        for shape in dict.fromkeys(image.shape for image in images):
            group = [i for i, image in enumerate(images) if image.shape == shape]
            with torch.inference_mode():
                found = forward([images[i] for i in group], [phrases[i] for i in group])
            for i, (labels, scores, boxes) in zip(group, found):
                results[i] = within(labels, scores, boxes, shape[:2])
        return results

    def _owl(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[tuple[torch.Tensor, ...]]:
        inputs = self._processor(images=images, text=phrases, truncation=True, return_tensors="pt")
        # The processor pads each image's queries to the longest list with " "; a query whose first
        # token is 0 is one the model masks out, so padding never wins a box.
        queries = inputs["input_ids"].view(len(images), -1, inputs["input_ids"].shape[-1])
        for image_queries, count in zip(queries, map(len, phrases)):
            image_queries[count:] = 0
        outputs = self._run(inputs)
        found = self._processor.post_process_grounded_object_detection(
            outputs, threshold=self.params.score_threshold, target_sizes=[image.shape[:2] for image in images])
        return [(r["labels"], r["scores"], r["boxes"]) for r in found]

    def _dino(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[tuple[torch.Tensor, ...]]:
        prompts = [dino_prompt(image_phrases) for image_phrases in phrases]
        max_length = self._model.config.max_text_len
        inputs = self._processor(images=images, text=[text for text, _ in prompts], padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
        outputs = self._run(inputs)
        # Threshold -1 keeps every query, in order, so result j is query j. The library's labels (the
        # tokens above a text threshold) are not wanted, hence none: the phrase comes from the spans.
        found = self._processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"].cpu(), threshold=-1.0, text_threshold=1.0,
            target_sizes=[image.shape[:2] for image in images])
        results = []
        for r, probs, (text, spans) in zip(found, outputs.logits.sigmoid(), prompts):
            offsets = self._processor.tokenizer(text, truncation=True, max_length=max_length,
                                                return_offsets_mapping=True)["offset_mapping"]
            tokens = [span_tokens(offsets, span) for span in spans]
            # A phrase truncated away entirely has no tokens and answers for no box.
            phrase_probs = torch.stack([probs[:, t].amax(dim=-1) if t else torch.full((len(probs),), -1.0)
                                        for t in tokens], dim=-1)
            keep = r["scores"] > self.params.score_threshold
            results.append((phrase_probs.argmax(dim=-1)[keep], r["scores"][keep], r["boxes"][keep]))
        return results

    def _run(self, inputs: Any) -> Any:
        """The model's outputs, logits and boxes as float32 on the CPU where post-processing reads them."""
        outputs = self._model(**inputs.to(device=self._device, dtype=self._dtype))
        outputs.logits, outputs.pred_boxes = outputs.logits.float().cpu(), outputs.pred_boxes.float().cpu()
        return outputs


def within(labels: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> Detections:
    """Detections with their boxes clipped to a `size` (height, width) image; those less than a pixel
    wide or tall there (an OWLv2 box over the padding that squares the image) are no prompt."""
    height, width = size
    boxes = boxes.numpy().astype(np.float64).clip(0, [width, height, width, height])
    visible = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return Detections(labels.numpy()[visible], scores.numpy().astype(np.float64)[visible], boxes[visible])


def subject_phrases(captions: Captions) -> list[str]:
    """What to ground: the foreground captions where the source gave them, else the subject phrase of
    the full caption; whitespace tidied, each once (case aside), only phrases with a word in them."""
    return tidy_phrases(captions.foreground) or tidy_phrases([split_caption(captions.full)[0]])


def tidy_phrases(texts: list[str]) -> list[str]:
    """Whitespace collapsed, each phrase once (case aside), only those with a word in them."""
    phrases: dict[str, str] = {}
    for phrase in (" ".join(text.split()) for text in texts):
        if re.search(r"\w", phrase):
            phrases.setdefault(phrase.lower(), phrase)
    return list(phrases.values())


def keyframes(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices from first to last (fewer when the clip is shorter)."""
    return sorted(set(np.linspace(0, num_frames - 1, count).round().astype(int).tolist())) if num_frames else []


def dino_prompt(phrases: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's prompt for `phrases`, "phrase one. phrase two.", and each phrase's character span in it.

    The model was trained on lower-case phrases each closed by a full stop; a full stop inside a
    phrase would split it in two, so it becomes a space.
    """
    text, spans = "", []
    for phrase in phrases:
        words = " ".join(phrase.lower().replace(".", " ").split())
        start = len(text) + (1 if text else 0)
        text = f"{text} {words}." if text else f"{words}."
        spans.append((start, start + len(words)))
    return text, spans


def span_tokens(offsets: list[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    """Indices of the tokens whose characters lie within `span` (special tokens have empty offsets)."""
    start, end = span
    return [i for i, (s, e) in enumerate(offsets) if e > s and s >= start and e <= end]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N] IoU of one x0, y0, x1, y1 box with each of [N, 4] boxes."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area - inter, 1e-9)


def choose_prompts(phrases: list[str], found: dict[int, Detections], max_instances: int,
                   nms_iou: float) -> list[Prompt]:
    """At most `max_instances` prompts from what was `found` in each keyframe (by frame index), one per
    phrase, best score first.

    Phrases are taken in order of their best score. Each is located in every keyframe at its best
    box there that overlaps no box an earlier phrase holds in that frame by more than `nms_iou`;
    it then holds those boxes, and its prompt is the best of them.
    """
    best: dict[int, float] = {}
    for d in found.values():
        for k, score in zip(d.phrases.tolist(), d.scores.tolist()):
            best[k] = max(best.get(k, score), score)
    held: dict[int, list[np.ndarray]] = {frame: [] for frame in found}
    prompts: list[Prompt] = []
    for k in sorted(best, key=lambda k: -best[k]):
        if len(prompts) == max_instances:
            break
        located: list[tuple[float, int, np.ndarray]] = []
        for frame, d in found.items():
            mine = np.flatnonzero(d.phrases == k)
            for j in mine[np.argsort(-d.scores[mine], kind="stable")]:
                if not held[frame] or box_iou(d.boxes[j], np.stack(held[frame])).max() <= nms_iou:
                    located.append((float(d.scores[j]), frame, d.boxes[j]))
                    break
        if not located:
            continue
        score, frame, box = max(located, key=lambda candidate: candidate[0])
        prompts.append(Prompt(phrase=phrases[k], frame=frame, box=tuple(float(v) for v in box), score=score))
        for _, where, box_there in located:
            held[where].append(box_there)
    return sorted(prompts, key=lambda prompt: -prompt.score)
