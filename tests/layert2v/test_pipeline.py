import json

import numpy as np
import pytest
import torch

from vidlayer.io.video import decode_video
from layert2v.pipeline import LayeredVideo, LayerPrompts, LayerT2VPipeline

PROMPTS = LayerPrompts(
    full="a red fox runs across a snowy meadow",
    background="a snowy meadow under a pale sky",
    foregrounds=("a red fox running",),
    negative="blurry, low quality",
)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return LayerT2VPipeline.from_pretrained(tiny_checkpoint, scheduler="unipc")


def test_tiny_sampling_writes_every_layer(pipe, tmp_path):
    steps = []
    (video,) = pipe(PROMPTS, num_frames=9, height=32, width=48, steps=3, seed=0,
                    progress=lambda i, n: steps.append((i, n)))
    assert steps[-1] == (3, 3)
    assert set(video.layers) == {"full", "background", "fg0", "alpha0"}
    assert video.layers["full"].shape == (9, 32, 48, 3) and video.layers["alpha0"].shape == (9, 32, 48)
    assert all(0 <= v.min() and v.max() <= 1 for v in video.layers.values())
    written = video.save(tmp_path)
    for name in ("full", "background", "fg0", "composite"):
        assert decode_video(written[name]).shape == (9, 32, 48, 3)
    alpha = decode_video(written["alpha0"], grey=True)
    # Alpha is written lossless: it decodes to exactly the quantised matte.
    assert np.array_equal(alpha, (np.clip(video.layers["alpha0"], 0, 1) * 255 + 0.5).astype(np.uint8))
    assert written["contact_sheet"].stat().st_size > 0
    info = json.loads(written["json"].read_text())
    assert info["prompts"]["foregrounds"] == ["a red fox running"]
    assert info["prompts"]["negative"] == ["blurry, low quality"] * 3
    assert info["coherence_error"] == pytest.approx(video.coherence_error())


def test_two_foregrounds_and_a_batch(pipe):
    prompts = [LayerPrompts("two birds over a lake", "a lake", ("a heron", "a gull")),
               LayerPrompts("two boats on a lake", "a lake", ("a red boat", "a canoe"))]
    videos = pipe(prompts, num_frames=5, height=32, width=32, steps=2, guidance_scale=1.0)
    assert len(videos) == 2
    assert set(videos[0].layers) == {"full", "background", "fg0", "alpha0", "fg1", "alpha1"}
    assert not np.allclose(videos[0].layers["full"], videos[1].layers["full"])


def test_a_batch_decodes_as_its_samples_one_by_one(pipe):
    prompts = [PROMPTS, PROMPTS]
    layout = PROMPTS.layout
    packed = torch.randn(2, 16, layout.num_layers * 2, 4, 4, generator=torch.Generator().manual_seed(0))
    together = pipe.decode(layout, packed, 16.0, prompts)
    for i, video in enumerate(together):
        (alone,) = pipe.decode(layout, packed[i:i + 1], 16.0, prompts[:1])
        for name, frames in alone.layers.items():
            np.testing.assert_allclose(video.layers[name], frames, atol=1e-5)


def test_a_given_background_is_a_condition(pipe):
    rng = np.random.default_rng(0)
    background = rng.random((5, 32, 32, 3), dtype=np.float32)
    latent = pipe.encode_layers({"background": background})["background"]
    (video,) = pipe(PROMPTS, num_frames=5, height=32, width=32, steps=2, given={"background": background})
    decoded = pipe.vae.decode_video(latent)[0].permute(1, 2, 3, 0).numpy()
    np.testing.assert_allclose(video.layers["background"], (decoded + 1) / 2, atol=1e-6)


def test_composite_follows_the_toolkits_rule():
    rng = np.random.default_rng(1)
    layers = {name: rng.random((2, 4, 4, 3), dtype=np.float32) for name in ("full", "background", "fg0", "fg1")}
    layers["alpha0"] = np.ones((2, 4, 4), np.float32)
    layers["alpha1"] = rng.random((2, 4, 4), dtype=np.float32)
    video = LayeredVideo(layers, fps=16)
    np.testing.assert_allclose(video.composite(), layers["fg0"])  # an opaque top layer hides the rest
    layers["full"] = layers["fg0"]
    assert video.coherence_error() < 1e-6


def test_per_slot_negative_prompts(pipe):
    shared = LayerPrompts("a", "b", ("c",), negative="blurry")
    per_slot = LayerPrompts("a", "b", ("c",), negative=("blurry", "people, animals", "blurry"))
    _, negative_shared = pipe.encode_prompts([shared])
    _, negative_per_slot = pipe.encode_prompts([per_slot])
    assert torch.equal(negative_shared[0, 0], negative_per_slot[0, 0])
    assert not torch.equal(negative_shared[0, 1], negative_per_slot[0, 1])
    with pytest.raises(ValueError, match="negative prompts"):
        LayerPrompts("a", "b", ("c",), negative=("x", "y"))


def test_bad_sizes_are_refused(pipe):
    with pytest.raises(ValueError, match="4n\\+1"):
        pipe(PROMPTS, num_frames=8, height=32, width=32, steps=1)
    with pytest.raises(ValueError, match="same number of foregrounds"):
        pipe([PROMPTS, LayerPrompts("a", "b", ("c", "d"))], num_frames=5, height=32, width=32, steps=1)
