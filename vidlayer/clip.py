"""The records that flow through a build: an input, the clips cut from it, and their outcomes.

An *input* is one raw video with its captions. Stages turn it into one or more *clips*
(one per shot and window) and every clip ends with an outcome: written, dropped or failed.
Outcomes become manifest rows, so nothing an input produced is ever silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class Status(str, Enum):
    WRITTEN = "written"
    DROPPED = "dropped"
    FAILED = "failed"


@dataclass(frozen=True)
class InputItem:
    """One raw caption-video pair as discovered on disk or listed in a manifest."""

    key: str
    path: str  # absolute, what workers open
    source: str  # as the user named it: relative to the input folder, or as listed in the manifest
    caption: str | None = None
    fg_captions: tuple[str, ...] = ()
    bg_caption: str | None = None
    size: int | None = None  # bytes on disk when discovered; a resumed build checks it is the same file
    # Set when the input is unusable before any video is opened (bad caption file, bad path).
    reject_reason: str | None = None
    reject_message: str | None = None


@dataclass
class Captions:
    full: str
    foreground: list[str] = field(default_factory=list)
    background: str | None = None
    # Which captions were derived by the pipeline rather than given by the source.
    derived: dict[str, bool] = field(default_factory=dict)


@dataclass
class VideoInfo:
    """What probing the source container told us."""

    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    codec: str
    backend: str


@dataclass
class Motion:
    """Dense motion of a clip, estimated once by the segmenter and reused by later stages.

    `flow[t]` maps frame t to frame t+1 at the working resolution (`scale` times the frame size);
    `homographies[t]` is the camera motion from frame t to t+1 in full-resolution pixels.
    """

    scale: float
    flow: np.ndarray
    homographies: np.ndarray


@dataclass
class Prompt:
    """A subject the grounding stage found: its box in one frame, to prompt a segmenter with."""

    phrase: str  # the words of the caption it answers to
    frame: int  # index into the clip's frames
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float


@dataclass
class Clip:
    """A single-shot window of an input on its way to becoming a layered sample.

    Arrays are filled in by the stages in order: `frames` by window, `prompts` by ground (where
    the pipeline has it), `masks` and `motion` by segment, `alphas` by matte, `background` by
    inpaint, `foregrounds` by foreground, and `sample` (the encoded WebDataset members) by write,
    which also frees the arrays.
    """

    key: str
    input_key: str
    path: str  # absolute, what workers open
    source: str  # as the user named it
    captions: Captions
    info: VideoInfo | None = None
    # Low-resolution frames over the whole input, used to filter and to find shots.
    proxy: np.ndarray | None = None
    proxy_fps: float = 0.0
    # Start and end of this clip in the source, seconds.
    span: tuple[float, float] | None = None
    fps: float = 0.0
    frames: np.ndarray | None = None  # [T, H, W, 3] uint8
    source_frames: np.ndarray | None = None  # [T] int, the source frame each frame was decoded from
    prompts: list[Prompt] = field(default_factory=list)  # by the grounding stage, one per subject at most
    masks: np.ndarray | None = None  # [K, T, H, W] bool, one layer per foreground instance
    motion: Motion | None = None
    alphas: np.ndarray | None = None  # [K, T, H, W] float32 in [0, 1]
    background: np.ndarray | None = None  # [T, H, W, 3] uint8
    foregrounds: np.ndarray | None = None  # [K, T, H, W, 3] uint8, straight (unpremultiplied) colour
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sample: dict[str, Any] | None = None

    @property
    def num_layers(self) -> int:
        if self.alphas is not None:
            return int(self.alphas.shape[0])
        return 0 if self.masks is None else int(self.masks.shape[0])


@dataclass
class Outcome:
    """How one clip (or, when nothing was cut from it, the input itself) ended."""

    key: str
    status: Status
    stage: str | None = None
    reason: str | None = None
    message: str | None = None
    clip: Clip | None = None


class Drop(Exception):
    """Raised by a stage to drop a clip on purpose; `reason` is a short stable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
