import pickle
import re

import numpy as np
import pytest
from PIL import Image

from vidlayer.clip import Captions, Clip
from vidlayer.config import parse_pipeline
from vidlayer.stages.caption_vlm import (GREY, MalformedCaptions, VlmCaption, VlmCaptionParams, clip_messages,
                                         parse_captions)

VALID = '{"full": "a dog runs on grass", "foreground": ["a dog running"], "background": "a green lawn"}'
EXPECTED = Captions("a dog runs on grass", ["a dog running"], "a green lawn")


def layered_clip(layers: int, captions: Captions, num_frames: int = 6, height: int = 24, width: int = 32) -> Clip:
    """A clip as the caption stage gets it: frames, `layers` foreground layers (a square each) and a background."""
    rng = np.random.default_rng(layers)
    clip = Clip(key=f"clip{layers}", input_key="in", path="/x.mp4", source="x.mp4", captions=captions)
    clip.frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    clip.background = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    clip.foregrounds = rng.integers(0, 256, (layers, num_frames, height, width, 3), dtype=np.uint8)
    clip.alphas = np.zeros((layers, num_frames, height, width), np.float32)
    for k in range(layers):
        clip.alphas[k, :, 4:12, 4 + 12 * k: 12 + 12 * k] = 1.0
    return clip


# Parsing


@pytest.mark.parametrize("text", [
    VALID,
    f"```json\n{VALID}\n```",
    f"Sure! Here are the captions:\n{VALID}\nI hope this helps.",
    "{'full': 'a dog runs on grass', 'foreground': ['a dog running'], 'background': 'a green lawn'}",
    '{"full": "a dog runs on grass", "foreground": ["a dog running",], "background": "a green lawn",}',
    '{"full": "  a dog runs on grass ", "foreground": "a dog running\\n", "background": " a green lawn"}',
    # An echoed template first, then the answer.
    '{"full": "...", "foreground": ["..."], "background": "..."} ' + VALID,
])
def test_parse_accepts_the_object_in_its_common_wrappings(text):
    assert parse_captions(text, layers=1) == EXPECTED


def test_parse_keeps_braces_quotes_and_apostrophes_inside_captions():
    text = ('Answer: {"full": "a cat\'s face {close up}", "foreground": ["a cat", "a sign saying \\"}\\""], '
            '"background": "a rug"}')
    assert parse_captions(text, layers=2) == Captions("a cat's face {close up}", ["a cat", 'a sign saying "}"'], "a rug")


@pytest.mark.parametrize("text, layers, message", [
    ("I cannot caption this video.", 1, "no JSON object"),
    ('{"full": "a dog", "foreground": ["a dog"], "background": "grass"', 1, "no JSON object"),  # cut off
    ('{"full": "a dog", "foreground": ["a dog"]}', 1, "missing key(s) background"),
    (VALID, 2, "not a list of 2"),
    ('{"full": "x", "foreground": "a dog and a cat", "background": "y"}', 2, "not a list of 2"),
    ('{"full": "x", "foreground": ["a dog", "a cat", "a ball"], "background": "y"}', 2, "not a list of 2"),
    ('{"full": "", "foreground": ["a dog"], "background": "grass"}', 1, "full caption is empty"),
    ('{"full": "a dog", "foreground": ["  "], "background": "grass"}', 1, "foreground caption is empty"),
    ('{"full": "a dog", "foreground": ["a dog"], "background": "..."}', 1, "background caption is empty"),
    ('{"full": "a dog", "foreground": [3], "background": "grass"}', 1, "not a string"),
    ('{"full": "a dog", "foreground": ["a dog"], "background": null}', 1, "not a string"),
])
def test_parse_refuses_malformed_answers(text, layers, message):
    with pytest.raises(MalformedCaptions, match=re.escape(message)):
        parse_captions(text, layers)


# The message


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_message_shows_every_video_and_asks_for_one_caption_per_layer(layers):
    messages = clip_messages(layered_clip(layers, Captions("birds over a lake")), frames=3, image_size=48)
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    images = [part["image"] for part in content if part["type"] == "image"]
    assert len(images) == 3 * (2 + layers)
    assert all(isinstance(image, Image.Image) and min(image.size) == 48 for image in images)
    instructions = content[-1]["text"]
    assert f"{layers} foreground" in instructions and f"exactly {layers} strings" in instructions
    assert all(f'"{key}"' in instructions for key in ("full", "foreground", "background"))
    assert '"birds over a lake"' in instructions


def test_layers_are_shown_over_grey():
    clip = layered_clip(2, Captions("x"), height=48, width=48)
    content = clip_messages(clip, frames=1, image_size=48)[0]["content"]
    images = [np.asarray(part["image"]) for part in content if part["type"] == "image"]
    full, layer1, layer2, background = images
    assert (layer1[20:, 20:] == GREY).all() and (layer1[4:12, 4:12] == clip.foregrounds[0, 0, 4:12, 4:12]).all()
    assert (layer2[4:12, 4:12] == GREY).all() and (layer2[4:12, 16:24] == clip.foregrounds[1, 0, 4:12, 16:24]).all()
    assert (full == clip.frames[0]).all() and (background == clip.background[0]).all()


# Retries and merging, with a scripted model


def test_a_malformed_answer_is_retried_with_sampling(scripted):
    stage = VlmCaption(VlmCaptionParams(model="unused"))
    calls = scripted(stage, [["no idea"], [f"```{VALID}```"]])
    clip = stage.process(layered_clip(1, Captions("a dog on grass")))
    assert calls == [(1, False), (1, True)]
    assert clip.metrics == {"caption_attempts": 2.0, "caption_fallback": 0.0}
    assert (clip.captions.foreground, clip.captions.background) == (["a dog running"], "a green lawn")
    assert clip.captions.full == "a dog on grass"  # given, so kept
    assert clip.captions.derived == {"full": False, "foreground": True, "background": True, "vlm_fallback": False}


def test_only_the_malformed_clips_of_a_batch_are_retried(scripted):
    stage = VlmCaption(VlmCaptionParams(model="unused", retries=2))
    calls = scripted(stage, [[VALID, "garbage", "garbage"], ["{}", VALID], ["still garbage"]])
    clips = [layered_clip(1, Captions(f"a dog on grass {i}")) for i in range(3)]
    results = stage.process_batch(clips)
    assert calls == [(3, False), (2, True), (1, True)]
    assert [c.metrics["caption_attempts"] for c in results] == [1.0, 3.0, 2.0]
    assert [c.metrics["caption_fallback"] for c in results] == [0.0, 1.0, 0.0]
    assert [c.captions.derived["vlm_fallback"] for c in results] == [False, True, False]
    assert results[1].captions.foreground == ["a dog"] and results[1].captions.background == "grass 1"
    assert results[2].captions.background == "a green lawn"


def test_given_captions_win_only_when_keep_given(scripted):
    given = Captions("two birds over a lake", background="calm water")
    answer = '{"full": "birds", "foreground": ["a gull", "a tern"], "background": "a lake"}'
    for keep, expected in [(True, Captions("two birds over a lake", ["a gull", "a tern"], "calm water")),
                           (False, Captions("birds", ["a gull", "a tern"], "a lake"))]:
        stage = VlmCaption(VlmCaptionParams(model="unused", keep_given=keep))
        scripted(stage, [[answer]])
        clip = stage.process(layered_clip(2, Captions(given.full, background=given.background)))
        assert (clip.captions.full, clip.captions.foreground, clip.captions.background) == (
            expected.full, expected.foreground, expected.background)
        assert clip.captions.derived["background"] is not keep and clip.captions.derived["foreground"]


def test_clips_with_every_caption_given_skip_the_model(scripted):
    stage = VlmCaption(VlmCaptionParams(model="unused"))
    calls = scripted(stage, [[VALID]])
    done, asked = stage.process_batch([layered_clip(1, Captions("a dog", ["dog"], "lawn")),
                                       layered_clip(1, Captions("a dog on grass"))])
    assert calls == [(1, False)]
    assert (done.captions.foreground, done.captions.background) == (["dog"], "lawn")
    assert done.metrics == {"caption_attempts": 0.0, "caption_fallback": 0.0}
    assert asked.metrics["caption_attempts"] == 1.0


def test_a_clip_that_cannot_be_shown_fails_alone(scripted):
    stage = VlmCaption(VlmCaptionParams(model="unused"))
    scripted(stage, [[VALID]])
    broken = layered_clip(1, Captions("a dog"))
    broken.foregrounds = None
    failed, captioned = stage.process_batch([broken, layered_clip(1, Captions("a dog on grass"))])
    assert isinstance(failed, TypeError) and captioned.metrics["caption_fallback"] == 0.0


# The stage as the pipeline builds it, and the real (tiny) model


def test_the_pipeline_builds_a_stage_that_pickles_before_setup(tiny_vlm):
    spec = parse_pipeline({"stages": [{"stage": "caption", "backend": "vlm",
                                       "params": {"model": str(tiny_vlm), "batch_size": 3}}]}).stages[0]
    stage = pickle.loads(pickle.dumps(spec.build()))
    assert isinstance(stage, VlmCaption) and stage.batch_size == 3 and stage.params.model == str(tiny_vlm)


def test_setup_without_a_model_says_what_to_set():
    with pytest.raises(ValueError, match="needs `model`"):
        VlmCaption(VlmCaptionParams()).setup()


@pytest.fixture(scope="module")
def tiny_stage(tiny_vlm):
    stage = VlmCaption(VlmCaptionParams(model=str(tiny_vlm), device="cpu", frames=2, image_size=40,
                                        max_new_tokens=24, retries=1, batch_size=2))
    stage.setup()
    return stage


def test_tiny_model_end_to_end_falls_back_after_every_attempt(tiny_stage):
    calls = []
    generate = tiny_stage._generate

    def spy(conversations, sample):
        calls.append((len(conversations), sample))
        return generate(conversations, sample)

    tiny_stage._generate = spy
    try:
        one, two = tiny_stage.process_batch([layered_clip(1, Captions("a dog running across a meadow")),
                                             layered_clip(2, Captions("two birds over a lake", background="a lake"))])
    finally:
        del tiny_stage._generate
    # Random weights never write the JSON object: both clips are retried together, then fall back.
    assert calls == [(2, False), (2, True)]
    for clip, layers in [(one, 1), (two, 2)]:
        assert clip.metrics == {"caption_attempts": 2.0, "caption_fallback": 1.0}
        assert clip.captions.derived["vlm_fallback"] is True
        assert len(clip.captions.foreground) == layers and all(clip.captions.foreground)
        assert clip.captions.full and clip.captions.background
    assert one.captions.foreground == ["a dog running"] and one.captions.background == "a meadow"
    assert two.captions.background == "a lake" and two.captions.derived["background"] is False


def test_tiny_model_answers_a_batch_as_it_answers_each_clip(tiny_stage):
    """Left padding and decoding only the new tokens: a clip's greedy answer is the same alone or
    next to a longer prompt."""
    conversations = [clip_messages(layered_clip(layers, Captions("a dog")), 2, 40) for layers in (1, 3)]
    batched = tiny_stage._generate(conversations, sample=False)
    alone = [tiny_stage._generate([conversation], sample=False)[0] for conversation in conversations]
    assert batched == alone
    assert all(answer and "Answer with one JSON object" not in answer for answer in batched)
