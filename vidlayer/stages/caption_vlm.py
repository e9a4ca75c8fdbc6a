"""Layer captions from an image-text-to-text model (a VLM) that looks at the layers themselves.

The `source` backend can only split the full caption into a subject and a scene. This backend
shows the model sampled frames of the full video, of each foreground layer alone over grey and
of the inpainted background, and asks for every caption at once as one JSON object, with the
source caption as context. An answer that is not that object is asked for again with sampling
(greedy decoding would repeat it); a clip whose answers all stay malformed falls back to the
`source` derivation and is marked (`derived["vlm_fallback"]`, metric `caption_fallback`), so a
dataset never silently mixes the two.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from vidlayer.clip import Captions, Clip
from vidlayer.devices import pick_device, pick_dtype
from vidlayer.stages.base import BatchedStage, Resources, register
from vidlayer.stages.caption import SourceCaption, SourceCaptionParams

GREY = 128  # the backdrop a layer is shown over: neutral, so the model does not caption it as scenery
KEYS = ("full", "foreground", "background")
# Keeps given captions and derives the rest: what a clip gets when the model never answers properly.
SOURCE = SourceCaption(SourceCaptionParams(derive_missing=True))


@dataclass
class VlmCaptionParams:
    model: str = ""  # local checkpoint folder or hub id of an image-text-to-text model (required)
    device: str = "auto"  # auto: the worker's GPU if it has one, else the CPU
    dtype: str = "auto"  # auto, float32, bfloat16 or float16; auto: bf16 on GPUs, fp32 on CPUs
    frames: int = 4  # frames sampled evenly from each video shown (full, every layer, background)
    image_size: int = 336  # short side every image is resized to before the processor
    max_new_tokens: int = 200  # length limit of one answer
    retries: int = 2  # extra attempts after a malformed answer; they sample, so they can differ
    temperature: float = 0.7  # sampling temperature of the retries; the first attempt is greedy
    batch_size: int = 4  # clips per generate call
    keep_given: bool = True  # captions the source gave are kept; the model fills in the rest


class MalformedCaptions(ValueError):
    """The model's answer is not the JSON object of captions asked for; the message says how."""


@register
class VlmCaption(BatchedStage):
    stage = "caption"
    backend = "vlm"
    Params = VlmCaptionParams
    # GPU shares are the pipeline's to set (pipelines/models.yaml), as for the other model stages.
    default_resources = Resources(cpus=2.0)

    def setup(self) -> None:
        if not self.params.model:
            raise ValueError("the caption backend `vlm` needs `model`: a local checkpoint folder or hub id of an "
                             "image-text-to-text model (e.g. --set caption.model=/path/to/checkpoint)")
        # Imported here: workers of other stages never pay for transformers' multimodal imports.
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._device = pick_device(self.params.device)
        self._dtype = pick_dtype(self.params.dtype, self._device)
        self._processor = AutoProcessor.from_pretrained(self.params.model)
        # Generation appends after the prompt, so a batch of prompts must be padded on the left.
        tokenizer = self._processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:  # checkpoints made for one prompt at a time may have none
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForImageTextToText.from_pretrained(self.params.model, dtype=self._dtype)
        self._model = model.to(self._device).eval()

    def process_batch(self, clips: list[Clip]) -> list[Clip | Exception]:
        """Caption the clips with one generate call per attempt; each retry asks again only for
        the clips whose last answer was malformed."""
        results: list[Clip | Exception | None] = [None] * len(clips)
        pending: dict[int, list[dict[str, Any]]] = {}  # clip index -> its conversation
        for i, clip in enumerate(clips):
            try:
                if self._has_all_captions(clip):
                    results[i] = self._settle(clip, None, attempts=0)
                else:
                    pending[i] = clip_messages(clip, self.params.frames, self.params.image_size)
            except Exception as error:  # e.g. a clip without layers' arrays fails alone
                results[i] = error
        attempts = 1 + max(0, self.params.retries)
        for attempt in range(attempts):
            if not pending:
                break
            indices = list(pending)
            answers = self._generate([pending[i] for i in indices], sample=attempt > 0)
            for i, answer in zip(indices, answers):
                try:
                    captions = parse_captions(answer, clips[i].num_layers)
                except MalformedCaptions:
                    continue
                results[i] = self._settle(clips[i], captions, attempts=attempt + 1)
                del pending[i]
        for i in pending:
            results[i] = self._settle(clips[i], None, attempts=attempts)
        return results

    def _generate(self, conversations: list[list[dict[str, Any]]], sample: bool) -> list[str]:
        """The model's answer to each conversation: greedy, or sampled at `temperature` when `sample`."""
        inputs = self._processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True})
        inputs = inputs.to(self._device, dtype=self._dtype)  # casts only the floating tensors (pixels)
        if sample:
            # top_k=0 and top_p=1 override near-greedy defaults some checkpoints ship (Qwen's top_k=1),
            # which would make every retry repeat the first answer.
            options = {"do_sample": True, "temperature": self.params.temperature, "top_k": 0, "top_p": 1.0}
        else:
            options = {"do_sample": False}
        with torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=self.params.max_new_tokens, **options)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self._processor.batch_decode(new_tokens, skip_special_tokens=True)

    def _has_all_captions(self, clip: Clip) -> bool:
        """Whether the source gave every caption and keeps them, which leaves the model nothing to do."""
        given = clip.captions
        return (self.params.keep_given and bool(given.full) and len(given.foreground) == clip.num_layers
                and given.background is not None)

    def _settle(self, clip: Clip, answer: Captions | None, attempts: int) -> Clip:
        """Give the clip the model's captions (given ones win when `keep_given`) or, with no answer,
        the `source` derivation; record how many attempts it took and whether it fell back."""
        fell_back = answer is None and attempts > 0
        if answer is None:
            clip = SOURCE.process(clip)
            clip.captions.derived["full"] = False  # the source keeps the full caption as given
        else:
            given, layers, keep = clip.captions, clip.num_layers, self.params.keep_given
            keep_full = keep and bool(given.full)
            keep_foreground = keep and len(given.foreground) == layers
            keep_background = keep and given.background is not None
            clip.captions = Captions(
                full=given.full if keep_full else answer.full,
                foreground=list(given.foreground) if keep_foreground else answer.foreground,
                background=given.background if keep_background else answer.background,
                derived={"full": not keep_full, "foreground": not keep_foreground, "background": not keep_background},
            )
        clip.captions.derived["vlm_fallback"] = fell_back
        clip.metrics["caption_attempts"] = float(attempts)
        clip.metrics["caption_fallback"] = float(fell_back)
        return clip


def clip_messages(clip: Clip, frames: int, image_size: int) -> list[dict[str, Any]]:
    """The one user message asking for a clip's captions: each video shown as `frames` images under
    a line naming it (the full video, every foreground layer over grey, the background), then the
    instructions. Images are PIL images in `{"type": "image", "image": ...}` entries."""
    picks = np.linspace(0, len(clip.frames) - 1, frames).round().astype(int)
    layers = clip.num_layers
    content: list[dict[str, Any]] = [_text(f"The video ({frames} frames):\n"), *_images(clip.frames[picks], image_size)]
    for k in range(layers):
        alpha = clip.alphas[k, picks, ..., None]
        over_grey = (alpha * clip.foregrounds[k, picks] + (1.0 - alpha) * GREY).round().astype(np.uint8)
        content += [_text(f"\nForeground layer {k + 1} of {layers}, alone over grey:\n"), *_images(over_grey, image_size)]
    content += [_text("\nThe background, with the foreground removed:\n"), *_images(clip.background[picks], image_size)]
    content.append(_text("\n" + _instructions(clip.captions, layers)))
    return [{"role": "user", "content": content}]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _images(frames: np.ndarray, short_side: int) -> list[dict[str, Any]]:
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return [{"type": "image", "image": Image.fromarray(cv2.resize(frame, size, interpolation=interpolation))}
            for frame in frames]


def _instructions(given: Captions, layers: int) -> str:
    lines = []
    if given.full:
        lines.append(f"The source describes the video as: {_quote(given.full)}.")
    if given.foreground:
        lines.append(f"It describes the foreground as: {_quote('; '.join(given.foreground))}.")
    if given.background is not None:
        lines.append(f"It describes the background as: {_quote(given.background)}.")
    example = json.dumps({"full": "...", "foreground": ["..."] * layers, "background": "..."})
    plural = "layer" if layers == 1 else "layers"
    lines += [
        f"Write one caption for the whole video, one for each of the {layers} foreground {plural} (only its subject "
        "and what it does) and one for the background (only the scene, without the foreground).",
        f'Answer with one JSON object and nothing else, with "foreground" a list of exactly {layers} strings in '
        f"layer order: {example}",
    ]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_captions(text: str, layers: int) -> Captions:
    """The captions in a model's answer, which may wrap the JSON object in code fences or prose and
    use single quotes or trailing commas; raise `MalformedCaptions` when no object there has the
    three keys with non-empty captions and exactly `layers` foreground captions."""
    objects = [value for value in map(_load_object, _braced_spans(text)) if isinstance(value, dict)]
    if not objects:
        raise MalformedCaptions("no JSON object in the answer")
    errors = []
    for value in objects:
        try:
            return _validate(value, layers)
        except MalformedCaptions as error:
            errors.append(str(error))
    raise MalformedCaptions(errors[0])


def _braced_spans(text: str) -> list[str]:
    """Every balanced `{...}` span of `text`, outer ones first, braces inside quoted strings ignored."""
    spans = []
    for start in (i for i, char in enumerate(text) if char == "{"):
        depth, quote, escaped = 0, None, False
        for end in range(start, len(text)):
            char = text[end]
            if escaped:
                escaped = False
            elif quote:
                escaped = char == "\\"
                if char == quote:
                    quote = None
            elif char in "\"'":
                # An apostrophe inside a word ("cat's") opens no string.
                if char == '"' or not text[end - 1].isalnum():
                    quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    spans.append(text[start:end + 1])
                    break
    return spans


def _load_object(span: str) -> Any:
    """JSON, else JSON without trailing commas, else a Python literal (single quotes); None if none parse."""
    for attempt in (json.loads, lambda s: json.loads(re.sub(r",\s*([}\]])", r"\1", s)), ast.literal_eval):
        try:
            return attempt(span)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _validate(value: dict, layers: int) -> Captions:
    missing = [key for key in KEYS if key not in value]
    if missing:
        raise MalformedCaptions(f"missing key(s) {', '.join(missing)}")
    foreground = value["foreground"]
    if isinstance(foreground, str) and layers == 1:
        foreground = [foreground]
    if not isinstance(foreground, list) or len(foreground) != layers:
        raise MalformedCaptions(f"foreground is not a list of {layers} captions: {foreground!r}")
    full, background = _caption(value["full"], "full"), _caption(value["background"], "background")
    return Captions(full=full, foreground=[_caption(c, "foreground") for c in foreground], background=background)


def _caption(value: Any, key: str) -> str:
    """A caption stripped, refused when it is not a string or has no letter or digit (empty, "...")."""
    if not isinstance(value, str) or not any(char.isalnum() for char in value):
        raise MalformedCaptions(f"{key} caption is empty or not a string: {value!r}")
    return value.strip()
