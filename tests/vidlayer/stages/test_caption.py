import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.config import parse_pipeline
from vidlayer.stages.caption import split_caption


def caption_stage(**params):
    return parse_pipeline({"stages": [{"stage": "caption", "backend": "source", "params": params}]}).stages[0].build()


def clip_with(captions, layers=1):
    clip = Clip(key="k", input_key="k", path="/x", source="x", captions=captions)
    clip.masks = np.zeros((layers, 1, 2, 2), bool)
    return clip


@pytest.mark.parametrize("caption, subject, scene", [
    ("a dog running across a green meadow", "a dog running", "a green meadow"),
    ("a man in a red shirt walking on the beach, at sunset", "a man in a red shirt walking", "the beach"),
    ("a cat in a box rolling across a floor with a rug in the corner", "a cat in a box rolling",
     "a floor with a rug in the corner"),
    ("a cat's face drifting left in front of a brick wall.", "a cat's face drifting left", "a brick wall"),
    ("fireworks", "fireworks", "fireworks"),
])
def test_split_caption(caption, subject, scene):
    assert split_caption(caption) == (subject, scene)


def test_given_captions_are_kept_and_not_marked_derived():
    clip = caption_stage().process(clip_with(Captions("full", ["dog"], "meadow")))
    assert (clip.captions.foreground, clip.captions.background) == (["dog"], "meadow")
    assert clip.captions.derived == {"foreground": False, "background": False}


def test_missing_layer_captions_are_derived_per_layer_and_marked():
    clip = caption_stage().process(clip_with(Captions("two birds flying over a lake"), layers=2))
    assert clip.captions.foreground == ["two birds flying", "two birds flying"]
    assert clip.captions.background == "a lake"
    assert clip.captions.derived == {"foreground": True, "background": True}


def test_one_given_foreground_caption_serves_every_layer():
    clip = caption_stage().process(clip_with(Captions("full", ["birds"], "lake"), layers=2))
    assert clip.captions.foreground == ["birds", "birds"] and clip.captions.derived["foreground"]


def test_derivation_can_be_switched_off():
    with pytest.raises(Drop) as drop:
        caption_stage(derive_missing=False).process(clip_with(Captions("a dog on grass")))
    assert drop.value.reason == "missing_layer_captions"
