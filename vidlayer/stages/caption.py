"""Layer captions: the full caption from the source, foreground and background captions from
the sidecar when given, otherwise derived from the full caption and marked as derived.

The weights-free derivation splits the first clause of a caption where it places the subject
in its scene: at the first strong phrase ("a cat in a box rolling across a floor" -> "a cat in a
box rolling" / "a floor"), else at the last weak one ("a man in a red shirt walking on a beach"
-> "a man in a red shirt walking" / "a beach"). Where no such phrase exists, both layers reuse the full caption.
A VLM backend can replace this stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.stages.base import Resources, Stage, register

# Phrases that place a subject in front of a scene; the first one found splits the caption.
SCENE_PHRASES = ("in front of", "on top of", "in the middle of", "against", "across", "through", "along", "over",
                 "under", "beneath", "inside", "among", "within")
# Weaker ones also describe the subject itself ("a man in a red shirt"), so the last one wins.
PLACE_WORDS = ("near", "beside", "around", "onto", "into", "on", "in", "at", "by")


def _phrase_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\s(" + "|".join(re.escape(w) for w in words) + r")\s", re.IGNORECASE)


SCENE_SPLIT, PLACE_SPLIT = _phrase_pattern(SCENE_PHRASES), _phrase_pattern(PLACE_WORDS)


@dataclass
class SourceCaptionParams:
    derive_missing: bool = True  # derive missing layer captions instead of dropping the clip


@register
class SourceCaption(Stage):
    stage = "caption"
    backend = "source"
    Params = SourceCaptionParams
    default_resources = Resources(cpus=0.25)

    def process(self, clip: Clip) -> Clip:
        given = clip.captions
        layers = clip.num_layers
        fg_given = len(given.foreground) == layers
        if (not fg_given or given.background is None) and not self.params.derive_missing:
            raise Drop("missing_layer_captions", "layer captions are missing and derive_missing is off")
        subject, scene = split_caption(given.full)
        if fg_given:
            foreground = list(given.foreground)
        elif len(given.foreground) == 1:
            # One caption for the whole foreground, several layers: each layer gets it.
            foreground = given.foreground * layers
        else:
            foreground = [subject] * layers
        clip.captions = Captions(
            full=given.full,
            foreground=foreground,
            background=given.background if given.background is not None else scene,
            derived={"foreground": not fg_given, "background": given.background is None},
        )
        return clip


def split_caption(caption: str) -> tuple[str, str]:
    """(subject phrase, scene phrase) of a caption; both are the caption when it will not split."""
    first_clause = caption.split(",")[0].strip().rstrip(".")
    match = SCENE_SPLIT.search(first_clause) or next(reversed(list(PLACE_SPLIT.finditer(first_clause))), None)
    if match is None:
        return caption, caption
    subject = first_clause[: match.start()].strip()
    scene = first_clause[match.end():].strip()
    if not subject or not scene:
        return caption, caption
    return subject, scene
