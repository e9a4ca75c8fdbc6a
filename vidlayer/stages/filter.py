"""Keep what can become a good layered sample: bounds, shots, blank, static and shaky footage.

Everything here runs on the decode stage's low-resolution proxy. Shot cuts are found from
colour-histogram jumps between proxy frames; blank frames (near-uniform) act as cuts too.
Each shot is then judged on its own: *activity* is the mean absolute change between
consecutive frames after removing the global translation (nothing moves: too static), and
*shake* is the high-frequency part of the camera path (handheld jitter: too shaky).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from vidlayer.clip import Clip, Drop
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class FilterParams:
    min_duration_s: float = 1.0
    max_duration_s: float = 600.0
    min_fps: float = 8.0  # slower is a slideshow; the window stage keeps a rate below its own (no repeated frames)
    max_fps: float = 240.0
    min_short_side: int = 240
    max_long_side: int = 4096
    shot_cuts: Literal["split", "drop"] = "split"  # split a multi-shot source into clips, or drop it
    cut_threshold: float = 0.45  # Bhattacharyya distance of HSV histograms that counts as a cut
    min_shot_s: float = 1.0  # shorter shots are discarded
    blank_std: float = 4.0  # a proxy frame whose grey levels vary less than this is blank
    min_activity: float = 0.4  # mean grey-level change per proxy frame, camera motion removed
    max_shake: float = 0.02  # rms camera jitter as a fraction of the short side


@dataclass
class Shot:
    start: int  # proxy frame index, inclusive
    end: int  # exclusive
    activity: float = 0.0
    shake: float = 0.0


@register
class Filter(Stage):
    stage = "filter"
    backend = "default"
    Params = FilterParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> list[Clip]:
        p: FilterParams = self.params
        self._check_bounds(clip)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.proxy]).astype(np.float32)
        blank = grey.reshape(len(grey), -1).std(axis=1) < p.blank_std
        cuts = histogram_distances(clip.proxy) > p.cut_threshold
        shots = split_shots(blank, cuts)
        if p.shot_cuts == "drop" and (len(shots) > 1 or cuts.any()):
            raise Drop("shot_cut", f"{int(cuts.sum())} cut(s) found and shot_cuts is 'drop'")
        kept, rejected = [], []
        for shot in shots:
            shot.activity, shot.shake = activity_and_shake(grey[shot.start:shot.end])
            problem = self._judge(shot, clip.proxy_fps, min(grey.shape[1:]))
            (rejected if problem else kept).append((shot, problem))
        if not kept:
            if not shots:
                raise Drop("blank", "every frame is blank")
            shot, (reason, message) = max(rejected, key=lambda s: s[0].end - s[0].start)
            others = f" ({len(shots)} shots, none usable)" if len(shots) > 1 else ""
            raise Drop(reason, message + others)
        return [self._child(clip, i, shot, len(shots), len(kept), last=shot.end == len(grey))
                for i, (shot, _) in enumerate(kept)]

    def _check_bounds(self, clip: Clip) -> None:
        p: FilterParams = self.params
        info = clip.info
        short, long = sorted((info.width, info.height))
        # The rate first: a clip at an odd rate (high-speed footage, a mis-declared rate) is often
        # too short as well, and the rate is the cause.
        if not p.min_fps <= info.fps <= p.max_fps:
            raise Drop("fps_out_of_bounds", f"{info.fps:.2f} fps is outside [{p.min_fps}, {p.max_fps}] fps")
        if not p.min_duration_s <= info.duration_s <= p.max_duration_s:
            raise Drop("duration_out_of_bounds",
                       f"{info.duration_s:.2f} s is outside [{p.min_duration_s}, {p.max_duration_s}] s")
        if short < p.min_short_side or long > p.max_long_side:
            raise Drop("resolution_out_of_bounds",
                       f"{info.width}x{info.height}: short side must be >= {p.min_short_side}, "
                       f"long side <= {p.max_long_side}")

    def _judge(self, shot: Shot, proxy_fps: float, short_side: int) -> tuple[str, str] | None:
        p: FilterParams = self.params
        seconds = (shot.end - shot.start) / proxy_fps
        if seconds < p.min_shot_s:
            return "shot_too_short", f"shot of {seconds:.2f} s is shorter than {p.min_shot_s} s"
        if shot.activity < p.min_activity:
            return "too_static", f"activity {shot.activity:.2f} grey levels/frame < {p.min_activity}"
        if shot.shake / short_side > p.max_shake:
            return "too_shaky", f"camera jitter {shot.shake / short_side:.3f} of the frame > {p.max_shake}"
        return None

    @staticmethod
    def _child(clip: Clip, index: int, shot: Shot, total: int, kept: int, last: bool) -> Clip:
        fps = clip.proxy_fps
        # A cut lies somewhere between two proxy frames, so a shot ends at its last proxy frame
        # unless it runs to the end of the source.
        end = clip.info.duration_s if last else (shot.end - 1) / fps
        child = Clip(
            key=f"{clip.key}_s{index:02d}", input_key=clip.input_key, path=clip.path, source=clip.source,
            captions=clip.captions, info=clip.info, proxy=clip.proxy[shot.start:shot.end], proxy_fps=fps,
            span=(shot.start / fps, end), metrics=dict(clip.metrics), timings=dict(clip.timings),
        )
        child.metrics.update(filter_activity=shot.activity, filter_shake=shot.shake,
                             filter_shots=float(total), filter_shots_kept=float(kept))
        return child


def histogram_distances(frames: np.ndarray) -> np.ndarray:
    """Bhattacharyya distance between HSV histograms of consecutive frames ([N-1], 0 = same)."""
    hists = []
    for frame in frames:
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1, 2], None, [12, 4, 4], [0, 180, 0, 256, 0, 256])
        hists.append(cv2.normalize(h, None).flatten())
    return np.array([cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA) for a, b in zip(hists, hists[1:])])


def split_shots(blank: np.ndarray, cuts: np.ndarray) -> list[Shot]:
    """Runs of non-blank frames not crossing a cut; `cuts[i]` is a cut between frames i and i+1."""
    shots, start = [], None
    for i, is_blank in enumerate(blank):
        if start is not None and (is_blank or cuts[i - 1]):
            shots.append(Shot(start, i))
            start = None
        if start is None and not is_blank:
            start = i
    if start is not None:
        shots.append(Shot(start, len(blank)))
    return shots


def activity_and_shake(grey: np.ndarray) -> tuple[float, float]:
    """Camera-compensated frame change (grey levels) and camera jitter (pixels, rms)."""
    if len(grey) < 2:
        return 0.0, 0.0
    window = cv2.createHanningWindow(grey.shape[1:][::-1], cv2.CV_32F)
    shifts, changes = [], []
    for a, b in zip(grey, grey[1:]):
        (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
        shifts.append((dx, dy))
        aligned = cv2.warpAffine(b, np.float32([[1, 0, -dx], [0, 1, -dy]]), b.shape[::-1],
                                 borderMode=cv2.BORDER_REFLECT)
        margin = int(np.ceil(max(abs(dx), abs(dy)))) + 1
        changes.append(np.abs(aligned - a)[margin:-margin, margin:-margin].mean())
    path = np.cumsum(np.array(shifts), axis=0)
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(np.pad(path[:, i], 2, mode="edge"), kernel, "valid") for i in range(2)], axis=1)
    return float(np.median(changes)), float(np.sqrt(((path - smooth) ** 2).sum(axis=1).mean()))
