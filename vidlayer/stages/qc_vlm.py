"""The artifact check of LayerT2V's dataset pipeline: a chat VLM looks at the layers and judges them.

The quality gate measures numbers (recomposite error, coverage, flicker) that a ghost of the
subject left in the inpainted background, or a matte that cuts off a hand, can still pass. This
backend shows an image-text-to-text model sampled frames of the full video, of each foreground
layer alone over grey and its alpha matte, and of the background, and asks as one JSON object
whether the background still shows the subject and whether the mattes cover exactly the subject.
A clip judged bad is dropped (`qc_ghost`, `qc_matte`); every verdict is recorded as metrics, so a
build can also only record (`drop_on: []`) and be filtered later. An answer that is not the object
asked for is asked again with sampling; a clip whose answers all stay malformed is kept and marked
(`qc_answered` 0) unless `on_no_answer: drop`, so a broken model never silently empties a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vidlayer.clip import Clip, Drop
from vidlayer.stages.base import register
from vidlayer.stages.vlm_common import (Conversation, MalformedAnswer, VlmParams, VlmStage, layer_views, parse_object,
                                        quote, text_part)

Check = Literal["ghost", "matte"]
GHOST_KEY, MATTE_KEY, REASON_KEY = "subject_in_background", "matte_covers_subject", "reason"
BOOLEANS = {"true": True, "yes": True, "false": False, "no": False}  # spellings of a verdict the model may use


@dataclass
class VlmQcParams(VlmParams):
    max_new_tokens: int = 64  # the verdict is two booleans and a short reason
    drop_on: tuple[Check, ...] = ("ghost", "matte")  # verdicts that drop a clip; [] only records them
    on_no_answer: Literal["keep", "drop"] = "keep"  # no well-formed verdict: keep the clip (qc_answered 0) or drop it


@dataclass(frozen=True)
class Verdict:
    ghost: bool  # the background still shows (part of) the subject
    matte_ok: bool  # every matte covers its whole subject and nothing else
    reason: str = ""


class MalformedVerdict(MalformedAnswer):
    """The model's answer is not the JSON verdict asked for; the message says how."""


@register
class VlmQc(VlmStage):
    stage = "qc"
    backend = "vlm"
    Params = VlmQcParams

    def _conversation(self, clip: Clip) -> Conversation:
        return qc_messages(clip, self.params.frames, self.params.image_size)

    def _parse(self, clip: Clip, answer: str) -> Verdict:
        return parse_verdict(answer)

    def _settle(self, clip: Clip, verdict: Verdict | None, attempts: int) -> Clip | Drop:
        """Record the verdict as metrics on the clip (kept on a dropped clip's manifest row too) and
        return the clip, or the `Drop` that `drop_on` and `on_no_answer` call for."""
        clip.metrics["qc_attempts"] = float(attempts)
        clip.metrics["qc_answered"] = float(verdict is not None)
        if verdict is None:
            if self.params.on_no_answer == "drop":
                return Drop("qc_no_answer", f"the VLM gave no well-formed verdict in {attempts} attempts")
            return clip
        clip.metrics["qc_ghost"] = float(verdict.ghost)
        clip.metrics["qc_matte_ok"] = float(verdict.matte_ok)
        because = f": {verdict.reason}" if verdict.reason else ""
        if verdict.ghost and "ghost" in self.params.drop_on:
            return Drop("qc_ghost", f"the VLM sees the subject in the inpainted background{because}")
        if not verdict.matte_ok and "matte" in self.params.drop_on:
            return Drop("qc_matte", f"the VLM finds a matte that misses part of its subject or covers more{because}")
        return clip


def qc_messages(clip: Clip, frames: int, image_size: int) -> Conversation:
    """The one user message asking for a clip's verdict: each video shown as `frames` images under a
    line naming it (the full video, every foreground layer over grey and its matte, the background),
    then the questions. Images are PIL images in `{"type": "image", "image": ...}` entries."""
    content = [*layer_views(clip, frames, image_size, mattes=True), text_part("\n" + _questions(clip))]
    return [{"role": "user", "content": content}]


def _questions(clip: Clip) -> str:
    captions = clip.captions
    lines = []
    if captions.foreground:
        lines.append(f"The foreground layers should show: {quote('; '.join(captions.foreground))}.")
    elif captions.full:
        lines.append(f"The video is described as: {quote(captions.full)}.")
    example = f'{{"{GHOST_KEY}": true or false, "{MATTE_KEY}": true or false, "{REASON_KEY}": "a few words"}}'
    lines += [
        "Check the layers for two artifacts.",
        f'"{GHOST_KEY}": does the background still show a foreground subject, or a ghost, outline or smear of one '
        "where it was?",
        f'"{MATTE_KEY}": does each matte cover its whole subject, with nothing of the subject outside it and nothing '
        "else inside it?",
        f"Answer with one JSON object and nothing else: {example}",
    ]
    return "\n".join(lines)


def parse_verdict(text: str) -> Verdict:
    """The verdict in a model's answer (see `parse_object` for the wrappings it reads); raise
    `MalformedVerdict` when no object there has both questions answered true or false (also "yes" or
    "no"). The reason is optional: one that is not a string is left out."""
    return parse_object(text, _validate, MalformedVerdict)


def _validate(value: dict) -> Verdict:
    missing = [key for key in (GHOST_KEY, MATTE_KEY) if key not in value]
    if missing:
        raise MalformedVerdict(f"missing key(s) {', '.join(missing)}")
    reason = value.get(REASON_KEY)
    return Verdict(ghost=_boolean(value, GHOST_KEY), matte_ok=_boolean(value, MATTE_KEY),
                   reason=reason.strip() if isinstance(reason, str) else "")


def _boolean(value: dict, key: str) -> bool:
    answer = value[key]
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and answer.strip().lower() in BOOLEANS:
        return BOOLEANS[answer.strip().lower()]
    raise MalformedVerdict(f"{key} is not true or false: {answer!r}")
