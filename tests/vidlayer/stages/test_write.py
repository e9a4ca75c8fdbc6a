import numpy as np
import pytest

from vidlayer.clip import Captions, Clip
from vidlayer.config import parse_pipeline
from vidlayer.io.video import decode_video


def finished_clip(layers):
    rng = np.random.default_rng(0)
    t, h, w = 5, 32, 48
    clip = Clip(key="k_s00w00", input_key="k", path="/x.mp4", source="x.mp4",
                captions=Captions("full", ["fg"] * layers, "bg"), span=(0.0, 5 / 16), fps=16.0)
    clip.frames = np.full((t, h, w, 3), 120, np.uint8)
    clip.background = np.full((t, h, w, 3), 90, np.uint8)
    clip.foregrounds = np.full((layers, t, h, w, 3), 200, np.uint8)
    clip.alphas = rng.random((layers, t, h, w)).astype(np.float32)
    return clip


def write_stage():
    return parse_pipeline({"stages": [{"stage": "write", "backend": "webdataset"}]}).stages[0].build()


@pytest.mark.parametrize("layers, names", [(1, ["fg.mp4", "alpha.mp4"]),
                                           (2, ["fg0.mp4", "alpha0.mp4", "fg1.mp4", "alpha1.mp4"])])
def test_sample_members_and_metadata(layers, names):
    clip = finished_clip(layers)
    alphas = clip.alphas.copy()
    sample = write_stage().process(clip).sample
    assert sorted(sample) == sorted(["__key__", "full.mp4", "bg.mp4", "json", *names])
    meta = sample["json"]
    assert (meta["frames"], meta["width"], meta["height"], meta["num_foregrounds"]) == (5, 48, 32, layers)
    assert meta["layers"]["alpha"] == [n for n in names if n.startswith("alpha")]
    # Lossless alpha: exactly the 8-bit quantisation of the float matte.
    decoded = decode_video(sample[meta["layers"]["alpha"][-1]], grey=True)
    assert np.array_equal(decoded, np.round(alphas[-1] * 255).astype(np.uint8))
    assert clip.frames is None and clip.alphas is None
