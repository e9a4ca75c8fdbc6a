import pickle

import numpy as np
import pytest

from vidlayer.clip import Captions, Clip
from vidlayer.random_models.vace import write_tiny_vace
from vidlayer.stages.caption import split_caption
from vidlayer.stages.inpaint import clip_holes
from vidlayer.stages.inpaint_vace import VaceInpaint, VaceInpaintParams, background_prompt

T, H, W = 17, 64, 64
FULL = "A red fox runs across a snowy field at dawn"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(write_tiny_vace(tmp_path_factory.mktemp("vace")))


@pytest.fixture(scope="module")
def stage(model) -> VaceInpaint:
    stage = VaceInpaint(VaceInpaintParams(model=model, steps=2, seed=3))
    stage.setup()
    return stage


def make_clip(count: int = T, height: int = H, width: int = W) -> Clip:
    """A textured scene under a magenta square that moves right: frames and its one matte."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    alphas = np.zeros((1, count, height, width), np.float32)
    for t in range(count):
        alphas[0, t, 20:40, 10 + t:30 + t] = 1
    frames[alphas[0] > 0] = [255, 0, 255]
    return Clip(key="k", input_key="k", path="", source="", captions=Captions(FULL), frames=frames, alphas=alphas)


def test_background_is_kept_outside_the_hole_and_generated_inside(stage):
    clip = make_clip()
    frames = clip.frames.copy()
    stage.process(clip)
    assert clip.background.shape == frames.shape and clip.background.dtype == np.uint8
    params = stage.params
    cores, holes, _ = clip_holes(clip.alphas, params.alpha_threshold, params.margin)
    assert np.array_equal(clip.background[~holes], frames[~holes])
    assert (clip.background[cores] != frames[cores]).any(axis=-1).mean() > 0.9
    assert clip.metrics["inpaint_hole_fraction"] == pytest.approx(holes.mean())


def test_the_same_seed_gives_the_same_background(stage, model):
    first, second = make_clip(), make_clip()
    stage.process(first)
    stage.process(second)
    assert np.array_equal(first.background, second.background)
    other = VaceInpaint(VaceInpaintParams(model=model, steps=2, seed=4))
    other.setup()
    third = make_clip()
    other.process(third)
    assert not np.array_equal(first.background, third.background)


def test_a_clip_without_foreground_is_its_own_background(stage):
    clip = make_clip()
    clip.alphas[:] = 0
    stage.process(clip)
    assert np.array_equal(clip.background, clip.frames)
    assert clip.metrics["inpaint_hole_fraction"] == 0


@pytest.mark.parametrize("shape", [(16, H, W), (T, 56, W)])
def test_sizes_vace_cannot_take_are_refused(stage, shape):
    with pytest.raises(ValueError, match="4n \\+ 1 frames with sides that are multiples of 16"):
        stage.process(make_clip(*shape))


def test_the_prompt_is_the_background_caption():
    assert background_prompt(Captions(FULL, background="a snowy field at dawn, empty")) == "a snowy field at dawn, empty"
    scene = split_caption(FULL)[1]
    assert scene != FULL, "the full caption splits into subject and scene"
    assert background_prompt(Captions(FULL)) == scene


def test_setup_without_a_model_says_what_is_missing():
    with pytest.raises(ValueError, match="needs `model`"):
        VaceInpaint(VaceInpaintParams()).setup()


def test_the_stage_pickles_before_setup(model):
    stage = pickle.loads(pickle.dumps(VaceInpaint(VaceInpaintParams(model=model))))
    assert stage.params.model == model and not hasattr(stage, "pipeline")
