"""Probe the source and decode a small proxy of it for the filters and the shot detector.

Full-resolution frames are decoded later, by the window stage, and only for the frames a
sample keeps: a long source costs one cheap low-resolution pass, not gigabytes of frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from vidlayer.clip import Clip, Drop
from vidlayer.io.video import VideoError, probe, read_frames
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class DecodeParams:
    decoder: Literal["auto", "decord", "pyav"] = "auto"  # auto: decord, PyAV where decord cannot
    proxy_fps: float = 8.0  # frame rate of the proxy used for filtering and shot detection
    proxy_short_side: int = 64  # proxy frame size
    max_proxy_seconds: float = 600.0  # only this much of a longer source is looked at
    max_decode_pixels: int = 8192 * 4320  # safety bound: larger frames are not decoded at all


@register
class Decode(Stage):
    stage = "decode"
    backend = "default"
    Params = DecodeParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: DecodeParams = self.params
        try:
            info = probe(clip.path)
        except VideoError as e:
            raise Drop(e.reason, e.message) from None
        if info.width * info.height > p.max_decode_pixels:
            raise Drop("too_large_to_decode", f"{info.width}x{info.height} exceeds {p.max_decode_pixels} pixels")
        if info.num_frames < 2:
            raise Drop("too_few_frames", f"the stream has {info.num_frames} frame(s)")
        seconds = min(info.duration_s or info.num_frames / info.fps, p.max_proxy_seconds)
        # A source shorter than one proxy step (0.1 s at 1000 fps) still gets its first and last
        # frame, so that the filter judges its frame rate and length instead of a one-frame proxy.
        step = max(1.0, min(info.fps / p.proxy_fps, seconds * info.fps - 1))
        indices = np.unique(np.round(np.arange(0, seconds * info.fps, step)).astype(int))
        indices = indices[indices < info.num_frames]
        try:
            proxy, backend = read_frames(clip.path, indices, proxy_size(info.width, info.height, p.proxy_short_side),
                                         backend=p.decoder, threads=max(1, int(self.resources.cpus)))
        except VideoError as e:
            raise Drop(e.reason, e.message) from None
        if len(proxy) < 2:
            raise Drop("too_few_frames", f"only {len(proxy)} frame(s) could be decoded")
        if len(proxy) < len(indices):
            # A truncated file: keep what decodes and say so.
            clip.metrics["decode_truncated"] = 1.0
            last_frame = int(indices[len(proxy) - 1])
            info = replace(info, num_frames=last_frame + 1, duration_s=(last_frame + 1) / info.fps)
        clip.info = replace(info, backend=backend)
        clip.proxy = proxy
        clip.proxy_fps = info.fps / step
        return clip


def proxy_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the given short side, aspect kept, both even."""
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
