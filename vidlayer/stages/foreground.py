"""Foreground colour: the straight (unmixed) colour of each layer, everywhere in the frame.

With the matte and the clean background known, the compositing equation
    full = a F + (1 - a) B
has one unknown, so F = (full - (1 - a) B) / a. That is exact where the subject is opaque,
but as a falls the division amplifies every error of the matte, the background and the
video's quantisation, and at a = 0 there is nothing to solve. So the solved colour is
trusted in proportion to a (fully from a = 1/gain up) and blended, where it is not, with a
smooth estimate that the confident pixels spread outward: a pull-push pyramid (Gortler et
al. 1996), normalised convolution at every scale. It averages the confidence-weighted
colours down to a single pixel and, coming back up, keeps each level's own colour where
that level is confident and the coarser estimate elsewhere. This does the job of a
smoothness prior such as pymatting's estimate_foreground_ml at a few milliseconds a frame,
and uses the background we already know rather than re-estimating it. Past the edge the
layer keeps the colours of its rim, smoothly extended over the whole frame: no dark fringe
when the layer is composited, and cheap to encode.

Layer 0 is on top: full = a0 F0 + (1 - a0)(a1 F1 + (1 - a1)(... B)). Each layer is solved
after peeling off the layers above it, with the layers below it (guessed as the video's own
colour until solved) composited onto the background behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidlayer.clip import Clip
from vidlayer.layers import composite, visible_coverage
from vidlayer.stages.base import Resources, Stage, register

GUESS_SHARPNESS = 32  # coverage^this weighs a pixel for the first guess: 0.9 counts 3%, 0.8 nothing


@dataclass
class UnmixForegroundParams:
    min_alpha: float = 0.01  # below this much coverage a pixel says nothing about the layer's colour
    gain: float = 3.0  # the solved colour is trusted in proportion to coverage times this, up to 1


@register
class UnmixForeground(Stage):
    stage = "foreground"
    backend = "unmix"
    Params = UnmixForegroundParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: UnmixForegroundParams = self.params
        alphas = clip.alphas
        foregrounds = np.empty((*alphas.shape, 3), np.uint8)
        out_of_range = []
        for t in range(alphas.shape[1]):
            colours, out_of_range_t = unmix(clip.frames[t], alphas[:, t], clip.background[t], p.min_alpha, p.gain)
            foregrounds[:, t] = np.rint(colours)
            out_of_range.append(out_of_range_t)
        clip.foregrounds = borrow_empty_frames(foregrounds, alphas.max(axis=(2, 3)) > p.min_alpha)
        clip.metrics.update(foreground_out_of_range=float(np.mean(out_of_range)) if out_of_range else 0.0)
        return clip


def unmix(frame: np.ndarray, alphas: np.ndarray, background: np.ndarray, min_alpha: float,
          gain: float) -> tuple[np.ndarray, float]:
    """Straight colours [K, H, W, 3] float32 of one frame's layers; and the share of solved colours outside 0..255.

    Layer k sees full = above + through (a F + (1 - a) behind): `above` is what the layers on
    top of it add, `through` how much of it they let through, `behind` the layers under it
    composited onto the background. Colours that come out of range mean the matte, the
    background and the frame disagree.
    """
    image = frame.astype(np.float32)
    coverage = visible_coverage(alphas)
    # Until solved, a lower layer's colour is guessed from where it is seen unmixed.
    colours = np.empty((*alphas.shape, 3), np.float32)
    for k in range(1, len(alphas)):
        colours[k] = pull_push(image, cv2.pow(coverage[k], GUESS_SHARPNESS), 1.0)
    above = np.zeros_like(image)
    through = np.ones(alphas.shape[1:], np.float32)
    out_of_range, solved = 0, 0
    for k, (alpha, seen_share) in enumerate(zip(alphas, coverage)):
        behind = composite(colours[k + 1:], alphas[k + 1:], background)
        seen = seen_share > min_alpha
        rest = image - above - (through - seen_share)[..., None] * behind
        solution = rest / np.maximum(seen_share, min_alpha)[..., None]
        out_of_range += int((seen & (cv2.inRange(solution, (-0.5,) * 3, (255.5,) * 3) == 0)).sum())
        solved += int(seen.sum())
        colours[k] = pull_push(np.clip(solution, 0, 255), np.where(seen, seen_share, 0), gain)
        above += seen_share[..., None] * colours[k]
        through -= seen_share
    return colours, out_of_range / max(solved, 1)


def pull_push(image: np.ndarray, confidence: np.ndarray, gain: float) -> np.ndarray:
    """`image` [H, W, 3] kept where `confidence` [H, W] is high, smoothly extended where it is 0.

    Pull: confidence-weighted colour and confidence (4 channels) are halved in resolution down
    to a single pixel. Push: back up, each level keeps its own normalised colour in proportion
    to its confidence (times `gain`, up to 1) and the upsampled coarser estimate elsewhere.
    """
    levels = [np.dstack([image * confidence[..., None], confidence])]
    while max(levels[-1].shape[:2]) > 1:
        levels.append(cv2.pyrDown(levels[-1]))
    normalised = lambda level: level[..., :3] / np.maximum(level[..., 3:], 1e-12)
    estimate = normalised(levels[-1])
    for level in reversed(levels[:-1]):
        coarse = cv2.pyrUp(estimate, dstsize=level.shape[1::-1])
        trust = np.minimum(level[..., 3:] * gain, 1)
        estimate = coarse + trust * (normalised(level) - coarse)
    return estimate


def borrow_empty_frames(foregrounds: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Frames where a layer is absent (nothing to extend) take its colours from the nearest frame showing it."""
    for k, frames in enumerate(present):
        shown = np.nonzero(frames)[0]
        if len(shown) == 0:
            continue
        for t in np.nonzero(~frames)[0]:
            foregrounds[k, t] = foregrounds[k, shown[np.argmin(np.abs(shown - t))]]
    return foregrounds
