"""Cut training windows out of a shot and decode them at the training format.

A window has 4n+1 frames (what the Wan VAE's 4x temporal compression expects) at a fixed
frame rate, the short side scaled to the target and both sides rounded to a multiple of 16
(8x VAE downsampling times 2x2 patches). A source slower than that rate keeps its own: no
frame is repeated, which would also blind the segmenter's motion cues. Shots shorter than
`min_frames` at `fps` are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidlayer.clip import Clip, Drop
from vidlayer.io.video import VideoError, read_frames
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class WindowParams:
    num_frames: int = 49  # frames per window; rounded down to 4n+1
    min_frames: int = 17  # a shot shorter than this many frames at `fps` (min_frames / fps seconds) is dropped
    fps: float = 16.0  # the window's rate, or the source's where that is slower
    short_side: int = 480
    size_multiple: int = 16
    upscale: bool = False  # scale sources with a smaller short side up to `short_side`
    max_windows: int = 1  # non-overlapping windows per shot, spread evenly
    decoder: str = "auto"


@register
class Window(Stage):
    stage = "window"
    backend = "default"
    Params = WindowParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> list[Clip]:
        p: WindowParams = self.params
        start, end = clip.span
        rate = min(p.fps, clip.info.fps)
        available = int(np.floor((end - start) * rate + 1e-6))
        frames = four_n_plus_one(min(p.num_frames, available))
        if frames < 1 or frames / rate < max(p.min_frames, 1) / p.fps - 1e-9:
            raise Drop("shot_too_short", f"{end - start:.2f} s gives {frames} frames at {rate:g} fps, "
                                         f"shorter than min_frames={p.min_frames} at {p.fps:g} fps")
        count = max(1, min(p.max_windows, available // frames))
        # Spread the windows evenly; a single window sits in the middle of the shot.
        slack = (available - count * frames) / (count + 1)
        size = target_size(clip.info.width, clip.info.height, p.short_side, p.size_multiple, p.upscale)
        windows = []
        for w in range(count):
            first = start + (slack * (w + 1) + frames * w) / rate
            times = first + np.arange(frames) / rate
            windows.append(self._decode(clip, w, times, size, rate))
        return windows

    def _decode(self, clip: Clip, index: int, times: np.ndarray, size: tuple[int, int], rate: float) -> Clip:
        p: WindowParams = self.params
        info = clip.info
        # Round halves up: np.round's half-to-even would pick one frame twice when times fall between frames.
        wanted = np.clip(np.floor(times * info.fps + 0.5).astype(int), 0, info.num_frames - 1)
        unique = np.unique(wanted)
        try:
            decoded, _ = read_frames(clip.path, unique, size, backend=p.decoder, threads=max(1, int(self.resources.cpus)))
        except VideoError as e:
            raise Drop(e.reason, e.message) from None
        if len(decoded) < len(unique):
            raise Drop("decode_error", f"only {len(decoded)} of {len(unique)} window frames could be decoded")
        frames = decoded[np.searchsorted(unique, wanted)]
        return Clip(
            key=f"{clip.key}w{index:02d}", input_key=clip.input_key, path=clip.path, source=clip.source,
            captions=clip.captions, info=info, span=(float(times[0]), float(times[-1] + 1 / rate)), fps=rate,
            frames=frames, source_frames=wanted, metrics=dict(clip.metrics), timings=dict(clip.timings),
        )


def four_n_plus_one(n: int) -> int:
    return 0 if n < 1 else (n - 1) // 4 * 4 + 1


def target_size(width: int, height: int, short_side: int, multiple: int, upscale: bool) -> tuple[int, int]:
    """(w, h): short side at `short_side` (never enlarged unless `upscale`), both multiples of `multiple`."""
    scale = short_side / min(width, height)
    if not upscale:
        scale = min(scale, 1.0)
    w = max(multiple, round(width * scale / multiple) * multiple)
    h = max(multiple, round(height * scale / multiple) * multiple)
    return w, h
