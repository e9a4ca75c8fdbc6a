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

import json
from dataclasses import dataclass
from typing import Any

from vidlayer.clip import Captions, Clip
from vidlayer.stages.base import register
from vidlayer.stages.caption import SourceCaption, SourceCaptionParams
from vidlayer.stages.vlm_common import (GREY, Conversation, MalformedAnswer, VlmParams, VlmStage, layer_views,
                                        parse_object, quote, text_part)

__all__ = ["GREY", "MalformedCaptions", "VlmCaption", "VlmCaptionParams", "clip_messages", "parse_captions"]

KEYS = ("full", "foreground", "background")
# Keeps given captions and derives the rest: what a clip gets when the model never answers properly.
SOURCE = SourceCaption(SourceCaptionParams(derive_missing=True))


@dataclass
class VlmCaptionParams(VlmParams):
    keep_given: bool = True  # captions the source gave are kept; the model fills in the rest


class MalformedCaptions(MalformedAnswer):
    """The model's answer is not the JSON object of captions asked for; the message says how."""


@register
class VlmCaption(VlmStage):
    stage = "caption"
    backend = "vlm"
    Params = VlmCaptionParams

    def _conversation(self, clip: Clip) -> Conversation | None:
        if self._has_all_captions(clip):
            return None
        return clip_messages(clip, self.params.frames, self.params.image_size)

    def _parse(self, clip: Clip, answer: str) -> Captions:
        return parse_captions(answer, clip.num_layers)

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
    content = [*layer_views(clip, frames, image_size), text_part("\n" + _instructions(clip.captions, clip.num_layers))]
    return [{"role": "user", "content": content}]


def _instructions(given: Captions, layers: int) -> str:
    lines = []
    if given.full:
        lines.append(f"The source describes the video as: {quote(given.full)}.")
    if given.foreground:
        lines.append(f"It describes the foreground as: {quote('; '.join(given.foreground))}.")
    if given.background is not None:
        lines.append(f"It describes the background as: {quote(given.background)}.")
    example = json.dumps({"full": "...", "foreground": ["..."] * layers, "background": "..."})
    plural = "layer" if layers == 1 else "layers"
    lines += [
        f"Write one caption for the whole video, one for each of the {layers} foreground {plural} (only its subject "
        "and what it does) and one for the background (only the scene, without the foreground).",
        f'Answer with one JSON object and nothing else, with "foreground" a list of exactly {layers} strings in '
        f"layer order: {example}",
    ]
    return "\n".join(lines)


def parse_captions(text: str, layers: int) -> Captions:
    """The captions in a model's answer (see `parse_object` for the wrappings it reads); raise
    `MalformedCaptions` when no object there has the three keys with non-empty captions and exactly
    `layers` foreground captions."""
    return parse_object(text, lambda value: _validate(value, layers), MalformedCaptions)


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
