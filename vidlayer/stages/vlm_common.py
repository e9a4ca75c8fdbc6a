"""What the stages that ask a chat VLM about a clip share (caption `vlm`, qc `vlm`).

Both show the model sampled frames of the clip's videos, load an image-text-to-text model once
per worker, ask a batch of clips in one generate call, ask again with sampling for the clips whose
answer was not the JSON object asked for, and find that object in answers that wrap it in prose.
"""

from __future__ import annotations

import ast
import json
import re
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image

from vidlayer.clip import Clip
from vidlayer.devices import pick_device, pick_dtype
from vidlayer.stages.base import BatchedStage, Resources

GREY = 128  # the backdrop a layer is shown over: neutral, so the model does not take it for scenery
Conversation = list[dict[str, Any]]
Parsed = TypeVar("Parsed")


class MalformedAnswer(ValueError):
    """The model's answer is not the JSON object asked for; the message says how."""


@dataclass
class VlmParams:
    model: str = ""  # local checkpoint folder or hub id of an image-text-to-text model (required)
    device: str = "auto"  # auto: the worker's GPU if it has one, else the CPU
    dtype: str = "auto"  # auto, float32, bfloat16 or float16; auto: bf16 on GPUs, fp32 on CPUs
    frames: int = 4  # frames sampled evenly from each video the model is shown (full, layers, background)
    image_size: int = 336  # short side every image is resized to before the processor
    max_new_tokens: int = 200  # length limit of one answer
    retries: int = 2  # extra attempts after a malformed answer; they sample, so they can differ
    temperature: float = 0.7  # sampling temperature of the retries; the first attempt is greedy
    batch_size: int = 4  # clips per generate call


class VlmStage(BatchedStage):
    """A backend that asks a chat VLM (`Params` a `VlmParams`) one question per clip: subclasses say
    what to ask (`_conversation`), how to read the answer (`_parse`) and what it does to the clip
    (`_settle`)."""

    # GPU shares are the pipeline's to set (pipelines/models.yaml), as for the other model stages.
    default_resources = Resources(cpus=2.0)

    def setup(self) -> None:
        if not self.params.model:
            raise ValueError(f"the {self.stage} backend `{self.backend}` needs `model`: a local checkpoint folder or "
                             "hub id of an image-text-to-text model (e.g. --set "
                             f"{self.stage}.model=/path/to/checkpoint)")
        self._processor, self._model, self._device, self._dtype = load_chat_model(
            self.params.model, self.params.device, self.params.dtype)

    def process_batch(self, clips: list[Clip]) -> list[Clip | Exception]:
        """Ask about the clips with one generate call per attempt; each retry asks again only for
        the clips whose last answer was malformed."""
        results: list[Clip | Exception | None] = [None] * len(clips)
        pending: dict[int, Conversation] = {}  # clip index -> its conversation
        for i, clip in enumerate(clips):
            try:
                conversation = self._conversation(clip)
                if conversation is None:
                    results[i] = self._settle(clip, None, attempts=0)
                else:
                    pending[i] = conversation
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
                    parsed = self._parse(clips[i], answer)
                except MalformedAnswer:
                    continue
                results[i] = self._settle(clips[i], parsed, attempts=attempt + 1)
                del pending[i]
        for i in pending:
            results[i] = self._settle(clips[i], None, attempts=attempts)
        return results

    @abstractmethod
    def _conversation(self, clip: Clip) -> Conversation | None:
        """What to ask the model about the clip; None when there is nothing to ask."""

    @abstractmethod
    def _parse(self, clip: Clip, answer: str) -> Any:
        """The clip's answer read from the model's text; raise `MalformedAnswer` to ask again."""

    @abstractmethod
    def _settle(self, clip: Clip, answer: Any, attempts: int) -> Clip | Exception:
        """The clip's result given its parsed answer (None: not asked, or no well-formed answer)."""

    def _generate(self, conversations: list[Conversation], sample: bool) -> list[str]:
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


@cache
def load_chat_model(model: str, device: str, dtype: str) -> tuple[Any, torch.nn.Module, torch.device, torch.dtype]:
    """The processor, the model in eval mode, the device and the dtype of a chat VLM checkpoint.

    Loaded once per process: Ray fuses neighbouring stages with equal GPU shares into one actor,
    so the caption and qc stages of one pipeline share one copy of the same checkpoint.
    """
    # Imported here: workers of other stages never pay for transformers' multimodal imports.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    processor = AutoProcessor.from_pretrained(model)
    # Generation appends after the prompt, so a batch of prompts must be padded on the left.
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # checkpoints made for one prompt at a time may have none
        tokenizer.pad_token = tokenizer.eos_token
    loaded = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype)
    return processor, loaded.to(torch_device).eval(), torch_device, torch_dtype


# Showing a clip


def layer_views(clip: Clip, frames: int, image_size: int, mattes: bool = False) -> list[dict[str, Any]]:
    """Message content showing each of the clip's videos as `frames` images under a line naming it:
    the full video, every foreground layer alone over grey (followed by its alpha matte when
    `mattes`) and the background."""
    picks = np.linspace(0, len(clip.frames) - 1, frames).round().astype(int)
    layers = clip.num_layers
    content = [text_part(f"The video ({frames} frames):\n"), *image_parts(clip.frames[picks], image_size)]
    for k in range(layers):
        alpha = clip.alphas[k, picks]
        content += [text_part(f"\nForeground layer {k + 1} of {layers}, alone over grey:\n"),
                    *image_parts(over_grey(clip.foregrounds[k, picks], alpha), image_size)]
        if mattes:
            content += [text_part(f"\nThe matte of foreground layer {k + 1} (white: the layer, black: not):\n"),
                        *image_parts(matte_images(alpha), image_size)]
    content += [text_part("\nThe background, with the foreground removed:\n"),
                *image_parts(clip.background[picks], image_size)]
    return content


def over_grey(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A foreground layer ([T, H, W, 3] uint8) composited by its alpha ([T, H, W]) over grey."""
    alpha = alpha[..., None]
    return (alpha * foreground + (1.0 - alpha) * GREY).round().astype(np.uint8)


def matte_images(alpha: np.ndarray) -> np.ndarray:
    """Alpha mattes ([T, H, W] in [0, 1]) as grey RGB images: white where the layer is opaque."""
    return np.repeat((alpha * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_parts(frames: np.ndarray, short_side: int) -> list[dict[str, Any]]:
    """Each frame as a PIL image entry, resized to `short_side`."""
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return [{"type": "image", "image": Image.fromarray(cv2.resize(frame, size, interpolation=interpolation))}
            for frame in frames]


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# Reading an answer


def parse_object(text: str, validate: Callable[[dict], Parsed],
                 malformed: type[MalformedAnswer] = MalformedAnswer) -> Parsed:
    """`validate` of the first JSON object in a model's answer that it accepts. The answer may wrap
    the object in code fences or prose and use single quotes or trailing commas; raise `malformed`
    with the first object's fault (`validate` raises `MalformedAnswer`) when none is accepted."""
    objects = [value for value in map(_load_object, _braced_spans(text)) if isinstance(value, dict)]
    if not objects:
        raise malformed("no JSON object in the answer")
    errors = []
    for value in objects:
        try:
            return validate(value)
        except MalformedAnswer as error:
            errors.append(str(error))
    raise malformed(errors[0])


def _braced_spans(text: str) -> list[str]:
    """Every balanced `{...}` span of `text`, outer ones first, braces inside quoted strings ignored."""
    spans = []
    for start in (i for i, char in enumerate(text) if char == "{"):
        depth, quote_char, escaped = 0, None, False
        for end in range(start, len(text)):
            char = text[end]
            if escaped:
                escaped = False
            elif quote_char:
                escaped = char == "\\"
                if char == quote_char:
                    quote_char = None
            elif char in "\"'":
                # An apostrophe inside a word ("cat's") opens no string.
                if char == '"' or not text[end - 1].isalnum():
                    quote_char = char
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
