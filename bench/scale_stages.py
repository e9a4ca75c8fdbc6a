"""A stage chain that costs nothing, so that a build measures its orchestration alone.

`emit` opens no video: it decides each input's fate from a hash of its key (about a quarter
written as a tiny sample, most dropped, a few failed, like a real build's yield) and can wait
a while per clip, so that faults can land while work is in flight. `bench_scale.py` and the
cluster fault tests run the real build path (discovery, Ray Data, journal, shards, manifest)
with it. Workers import this module by name: put its folder on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from dataclasses import dataclass

from vidlayer.clip import Clip, Drop
from vidlayer.config import Pipeline, StageSpec
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class EmitParams:
    written: float = 0.25  # share of inputs that become a sample
    failed: float = 0.01  # share that raise an error
    seconds: float = 0.0  # time each clip takes
    payload_bytes: int = 1024  # size of a sample's one video-like member
    hang_key: str = ""  # the worker that gets this input stops itself (SIGSTOP), as a hung process would


@register
class Emit(Stage):
    stage = "emit"
    backend = "hash"
    Params = EmitParams

    def process(self, clip: Clip) -> Clip:
        p: EmitParams = self.params
        if clip.key == p.hang_key:
            os.kill(os.getpid(), signal.SIGSTOP)
        if p.seconds:
            time.sleep(p.seconds)
        draw = int.from_bytes(hashlib.sha1(clip.key.encode()).digest()[:4], "big") / 2**32
        if draw < p.failed:
            raise RuntimeError("a failure the benchmark asked for")
        if draw >= p.failed + p.written:
            raise Drop("not_chosen", "the benchmark's hash did not choose it")
        clip.key, clip.fps = f"{clip.input_key}-s0", 16.0  # one sample cut from the input, as a window would
        clip.sample = {
            "__key__": clip.key,
            "full.mp4": bytes(p.payload_bytes),
            "json": {"key": clip.key, "input_key": clip.input_key, "frames": 1, "width": 1, "height": 1,
                     "num_foregrounds": 1, "fps": 16.0, "captions": {"full": clip.captions.full}},
        }
        return clip


def emit_pipeline(**params: float | int | str) -> Pipeline:
    """A pipeline of `emit` alone, with its settings."""
    return Pipeline(name="scale-bench", stages=[StageSpec("emit", "hash", Emit, EmitParams(**params), Resources(cpus=1))])
