"""Encode a finished clip into the members of one WebDataset sample.

Members: `full.mp4`, `bg.mp4`, then `fg.mp4` + `alpha.mp4` for one foreground or `fg0.mp4`,
`alpha0.mp4`, `fg1.mp4`, ... for several, and `json` with captions, provenance and metrics.
Colour layers are 4:2:0 H.264; alpha is lossless grey H.264, so mattes decode bit-exactly.
Encoding happens in the worker; the driver only appends the bytes to a shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

import vidlayer
from vidlayer.clip import Clip
from vidlayer.io.video import encode_video
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class WriteParams:
    crf: int = 18  # H.264 quality of the colour layers (lower is better and larger)
    preset: str = "medium"
    alpha_lossless: bool = True
    alpha_crf: int = 10  # used only when alpha_lossless is off


@register
class Write(Stage):
    stage = "write"
    backend = "webdataset"
    Params = WriteParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: WriteParams = self.params
        k = clip.num_layers
        names = layer_names(k)
        encode = partial(encode_video, fps=clip.fps, crf=p.crf, preset=p.preset)
        sample = {"__key__": clip.key, "full.mp4": encode(clip.frames), "bg.mp4": encode(clip.background)}
        for i in range(k):
            alpha = np.round(clip.alphas[i] * 255).astype(np.uint8)
            sample[f"{names['fg'][i]}.mp4"] = encode(clip.foregrounds[i])
            sample[f"{names['alpha'][i]}.mp4"] = encode_video(alpha, clip.fps, crf=p.alpha_crf,
                                                               lossless=p.alpha_lossless, preset=p.preset)
        t, h, w = clip.frames.shape[:3]
        sample["json"] = {
            "key": clip.key,
            "input_key": clip.input_key,
            "source": clip.source,
            "span_s": list(clip.span),
            # Where each frame came from, so that `vidlayer eval` can line samples up with per-frame truth.
            "source_frames": None if clip.source_frames is None else clip.source_frames.tolist(),
            "source_size": [clip.info.width, clip.info.height] if clip.info else None,
            "fps": clip.fps,
            "frames": t,
            "width": w,
            "height": h,
            "num_foregrounds": k,
            "layers": {"full": "full.mp4", "background": "bg.mp4",
                       "foreground": [f"{n}.mp4" for n in names["fg"]], "alpha": [f"{n}.mp4" for n in names["alpha"]]},
            "captions": {"full": clip.captions.full, "foreground": clip.captions.foreground,
                         "background": clip.captions.background},
            "captions_derived": clip.captions.derived,
            "foreground_colour": "straight",
            "alpha_encoding": "lossless" if p.alpha_lossless else f"crf{p.alpha_crf}",
            "metrics": clip.metrics,
            "vidlayer_version": vidlayer.__version__,
        }
        clip.sample = sample
        # The arrays are no longer needed and would otherwise travel back to the driver.
        clip.proxy = clip.frames = clip.masks = clip.motion = clip.alphas = clip.background = clip.foregrounds = None
        return clip


def layer_names(num_foregrounds: int) -> dict[str, list[str]]:
    """`fg`/`alpha` for one foreground, `fg0`/`alpha0`, `fg1`/`alpha1`, ... for several."""
    if num_foregrounds == 1:
        return {"fg": ["fg"], "alpha": ["alpha"]}
    return {"fg": [f"fg{i}" for i in range(num_foregrounds)], "alpha": [f"alpha{i}" for i in range(num_foregrounds)]}
