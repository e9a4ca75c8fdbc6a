import pickle
import re

import numpy as np
import pytest
from PIL import Image

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.config import load_pipeline, parse_pipeline
from vidlayer.executors import stage_groups
from vidlayer.stages.caption_vlm import VlmCaption, VlmCaptionParams
from vidlayer.stages.qc_vlm import MalformedVerdict, VlmQc, VlmQcParams, Verdict, parse_verdict, qc_messages
from vidlayer.stages.vlm_common import GREY

GOOD = '{"subject_in_background": false, "matte_covers_subject": true, "reason": "clean layers"}'
GHOST = '{"subject_in_background": true, "matte_covers_subject": true, "reason": "a faint dog on the lawn"}'
BAD_MATTE = '{"subject_in_background": false, "matte_covers_subject": false, "reason": "the tail is cut off"}'
BOTH_BAD = '{"subject_in_background": true, "matte_covers_subject": false}'


def two_tone_clip(layers: int, num_frames: int = 5, size: int = 48) -> Clip:
    """A clip whose images are easy to recognise: frames of value 10, background 20, layer k a solid
    colour 60 + 60k, opaque on its own square, half transparent on a strip beside it, clear elsewhere."""
    clip = Clip(key=f"clip{layers}", input_key="in", path="/x.mp4", source="x.mp4",
                captions=Captions("a dog on a lawn", ["a dog running"] * layers, "a lawn"))
    clip.frames = np.full((num_frames, size, size, 3), 10, np.uint8)
    clip.background = np.full((num_frames, size, size, 3), 20, np.uint8)
    clip.foregrounds = np.stack([np.full((num_frames, size, size, 3), 60 + 60 * k, np.uint8) for k in range(layers)])
    clip.alphas = np.zeros((layers, num_frames, size, size), np.float32)
    for k in range(layers):
        clip.alphas[k, :, 4:12, 4 + 16 * k:12 + 16 * k] = 1.0
        clip.alphas[k, :, 4:12, 12 + 16 * k:16 + 16 * k] = 0.5
    return clip


@pytest.fixture
def judged(scripted):
    """A function that runs a qc stage with `params` and a model scripted with `answers` over `clips`
    one-layer clips, and returns the results and the generate calls."""

    def judge(answers: list[list[str]], clips: int = 1, **params) -> tuple[list, list[tuple[int, bool]]]:
        stage = VlmQc(VlmQcParams(model="unused", **params))
        calls = scripted(stage, answers)
        return stage.process_batch([two_tone_clip(1) for _ in range(clips)]), calls

    return judge


# Parsing


@pytest.mark.parametrize("text, expected", [
    (GOOD, Verdict(ghost=False, matte_ok=True, reason="clean layers")),
    (f"```json\n{GHOST}\n```", Verdict(ghost=True, matte_ok=True, reason="a faint dog on the lawn")),
    (f"Looking at the layers:\n{BAD_MATTE}\nDone.", Verdict(ghost=False, matte_ok=False, reason="the tail is cut off")),
    ("{'subject_in_background': False, 'matte_covers_subject': True,}", Verdict(ghost=False, matte_ok=True)),
    ('{"subject_in_background": " Yes", "matte_covers_subject": "NO"}', Verdict(ghost=True, matte_ok=False)),
    ('{"subject_in_background": "false", "matte_covers_subject": "true", "reason": ["x"]}',
     Verdict(ghost=False, matte_ok=True)),  # a reason that is not a string is left out
    # An echoed template first (not JSON: "true or false"), then the answer.
    ('{"subject_in_background": true or false, "matte_covers_subject": true or false} ' + GOOD,
     Verdict(ghost=False, matte_ok=True, reason="clean layers")),
])
def test_parse_reads_the_verdict_in_its_common_wrappings(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text, message", [
    ("The layers look fine to me.", "no JSON object"),
    ('{"subject_in_background": false, "matte_covers_subject": true', "no JSON object"),  # cut off
    ('{"subject_in_background": true or false, "matte_covers_subject": true or false}', "no JSON object"),
    ('{"subject_in_background": false, "reason": "fine"}', "missing key(s) matte_covers_subject"),
    ('{"reason": "fine"}', "missing key(s) subject_in_background, matte_covers_subject"),
    ('{"subject_in_background": "maybe", "matte_covers_subject": true}', "subject_in_background is not true or false"),
    ('{"subject_in_background": false, "matte_covers_subject": 1}', "matte_covers_subject is not true or false"),
    ('{"subject_in_background": null, "matte_covers_subject": true}', "subject_in_background is not true or false"),
])
def test_parse_refuses_malformed_and_partial_answers(text, message):
    with pytest.raises(MalformedVerdict, match=re.escape(message)):
        parse_verdict(text)


# The message


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_message_shows_the_video_every_layer_and_matte_and_the_background(layers):
    messages = qc_messages(two_tone_clip(layers), frames=3, image_size=32)
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    images = [part["image"] for part in content if part["type"] == "image"]
    assert len(images) == 3 * (2 + 2 * layers)
    assert all(isinstance(image, Image.Image) and min(image.size) == 32 for image in images)
    labels = [part["text"] for part in content[:-1] if part["type"] == "text"]
    assert len(labels) == 2 + 2 * layers
    assert all(f"matte of foreground layer {k + 1}" in labels[2 + 2 * k] for k in range(layers))
    questions = content[-1]["text"]
    assert '"subject_in_background"' in questions and '"matte_covers_subject"' in questions
    assert '"a dog running' in questions  # the model is told what the subject is


def test_images_are_the_video_each_layer_over_grey_its_matte_and_the_background():
    clip = two_tone_clip(2)
    content = qc_messages(clip, frames=1, image_size=48)[0]["content"]
    full, layer1, matte1, layer2, matte2, background = [np.asarray(p["image"]) for p in content if p["type"] == "image"]
    assert (full == 10).all() and (background == 20).all()
    for layer, matte, k in [(layer1, matte1, 0), (layer2, matte2, 1)]:
        colour, left = 60 + 60 * k, 4 + 16 * k
        assert (layer[4:12, left:left + 8] == colour).all() and (matte[4:12, left:left + 8] == 255).all()
        assert (layer[4:12, left + 8:left + 12] == round(0.5 * colour + 0.5 * GREY)).all()
        assert (matte[4:12, left + 8:left + 12] == 128).all()
        assert (layer[20:] == GREY).all() and (matte[20:] == 0).all()


# The decision, with a scripted model


@pytest.mark.parametrize("answer, reason, ghost, matte_ok, message", [
    (GHOST, "qc_ghost", 1.0, 1.0, "in the inpainted background: a faint dog on the lawn"),
    (BAD_MATTE, "qc_matte", 0.0, 0.0, "misses part of its subject or covers more: the tail is cut off"),
    (BOTH_BAD, "qc_ghost", 1.0, 0.0, "in the inpainted background"),
])
def test_a_bad_verdict_drops_the_clip_and_records_it(answer, reason, ghost, matte_ok, message, scripted):
    stage = VlmQc(VlmQcParams(model="unused"))
    scripted(stage, [[answer]])
    clip = two_tone_clip(1)
    [result] = stage.process_batch([clip])
    assert isinstance(result, Drop) and result.reason == reason and result.message.endswith(message)
    assert clip.metrics == {"qc_attempts": 1.0, "qc_answered": 1.0, "qc_ghost": ghost, "qc_matte_ok": matte_ok}
    scripted(stage, [[answer]])
    with pytest.raises(Drop, match=reason):  # as the inline executor's one-clip path sees it
        stage.process(two_tone_clip(1))


def test_a_good_verdict_keeps_the_clip_with_its_metrics(judged):
    [clip], calls = judged([[GOOD]])
    assert calls == [(1, False)]
    assert isinstance(clip, Clip)
    assert clip.metrics == {"qc_attempts": 1.0, "qc_answered": 1.0, "qc_ghost": 0.0, "qc_matte_ok": 1.0}


@pytest.mark.parametrize("drop_on, kept", [((), [True, True, True]), (("matte",), [True, False, False]),
                                           (("ghost",), [False, True, False])])
def test_only_the_checks_in_drop_on_drop_but_every_verdict_is_recorded(drop_on, kept, judged):
    results, _ = judged([[GHOST, BAD_MATTE, BOTH_BAD]], clips=3, drop_on=drop_on)
    assert [isinstance(r, Clip) for r in results] == kept
    for result, (ghost, matte_ok) in zip(results, [(1.0, 1.0), (0.0, 0.0), (1.0, 0.0)]):
        if isinstance(result, Clip):
            assert (result.metrics["qc_ghost"], result.metrics["qc_matte_ok"]) == (ghost, matte_ok)


# Retries, and clips without an answer


def test_malformed_answers_are_retried_with_sampling_only_for_those_clips(judged):
    results, calls = judged([[GOOD, "garbage", "{}"], [GHOST, "still garbage"], [BAD_MATTE]], clips=3)
    assert calls == [(3, False), (2, True), (1, True)]
    kept, ghost, matte = results
    assert kept.metrics["qc_attempts"] == 1.0 and kept.metrics["qc_answered"] == 1.0
    assert isinstance(ghost, Drop) and ghost.reason == "qc_ghost"
    assert isinstance(matte, Drop) and matte.reason == "qc_matte"


def test_persistently_malformed_answers_keep_the_clip_and_mark_it(judged):
    [clip], calls = judged([["no idea"], ["{'ghost': 'maybe'}"], ["I cannot tell"]], retries=2)
    assert calls == [(1, False), (1, True), (1, True)]
    assert isinstance(clip, Clip)
    assert clip.metrics == {"qc_attempts": 3.0, "qc_answered": 0.0}  # no verdict to re-threshold on


def test_persistently_malformed_answers_drop_the_clip_when_asked_to(scripted):
    stage = VlmQc(VlmQcParams(model="unused", retries=1, on_no_answer="drop"))
    scripted(stage, [["no idea", GOOD], ["no idea"]])
    clip = two_tone_clip(1)
    dropped, kept = stage.process_batch([clip, two_tone_clip(1)])
    assert isinstance(dropped, Drop) and dropped.reason == "qc_no_answer" and "2 attempts" in dropped.message
    assert clip.metrics == {"qc_attempts": 2.0, "qc_answered": 0.0}
    assert isinstance(kept, Clip) and kept.metrics["qc_answered"] == 1.0


def test_a_clip_that_cannot_be_shown_fails_alone(scripted):
    stage = VlmQc(VlmQcParams(model="unused"))
    calls = scripted(stage, [[GOOD]])
    broken = two_tone_clip(1)
    broken.background = None
    failed, kept = stage.process_batch([broken, two_tone_clip(1)])
    assert calls == [(1, False)]
    assert isinstance(failed, TypeError) and isinstance(kept, Clip)


# The stage in the pipeline, and the real (tiny) model


def test_the_models_pipeline_checks_after_the_quality_gate_in_the_caption_actor():
    pipeline = load_pipeline("models", ["qc.model=/models/vlm", "qc.drop_on=[ghost]", "qc.on_no_answer=drop"])
    names = [spec.stage for spec in pipeline.stages]
    assert names.index("quality") < names.index("qc") == names.index("write") - 1
    spec = pipeline.spec("qc")
    assert spec.cls is VlmQc and spec.params.model == "/models/vlm"
    assert spec.params.drop_on == ("ghost",) and spec.params.on_no_answer == "drop"
    # Same GPU share as caption, right after it: one actor, one GPU share for both VLM stages.
    assert ["caption", "qc"] in [[s.stage for s in group] for group in stage_groups(pipeline.stages)]


def test_the_pipeline_builds_a_stage_that_pickles_before_setup(tiny_vlm):
    spec = parse_pipeline({"stages": [{"stage": "qc", "backend": "vlm",
                                       "params": {"model": str(tiny_vlm), "batch_size": 3}}]}).stages[0]
    stage = pickle.loads(pickle.dumps(spec.build()))
    assert isinstance(stage, VlmQc) and stage.batch_size == 3 and stage.params.model == str(tiny_vlm)


def test_setup_without_a_model_says_what_to_set():
    with pytest.raises(ValueError, match=re.escape("needs `model`") + ".*--set qc.model="):
        VlmQc(VlmQcParams()).setup()


def test_tiny_model_end_to_end_keeps_and_marks_clips_it_cannot_judge(tiny_vlm):
    params = dict(model=str(tiny_vlm), device="cpu", frames=2, image_size=40, max_new_tokens=24, retries=1)
    stage = VlmQc(VlmQcParams(**params))
    stage.setup()
    calls, answers = [], []
    generate = stage._generate

    def spy(conversations, sample):
        calls.append((len(conversations), sample))
        answers.extend(generate(conversations, sample))
        return answers[-len(conversations):]

    stage._generate = spy
    one, two = stage.process_batch([two_tone_clip(1), two_tone_clip(2)])
    # Random weights never write the verdict: both clips are asked twice, then kept and marked.
    assert calls == [(2, False), (2, True)]
    assert len(answers) == 4 and all(isinstance(answer, str) for answer in answers)
    for clip in (one, two):
        assert isinstance(clip, Clip) and clip.metrics == {"qc_attempts": 2.0, "qc_answered": 0.0}

    strict = VlmQc(VlmQcParams(**params, on_no_answer="drop"))
    strict.setup()
    [dropped] = strict.process_batch([two_tone_clip(1)])
    assert isinstance(dropped, Drop) and dropped.reason == "qc_no_answer"


def test_caption_and_qc_on_the_same_checkpoint_share_one_loaded_model(tiny_vlm):
    qc = VlmQc(VlmQcParams(model=str(tiny_vlm), device="cpu"))
    caption = VlmCaption(VlmCaptionParams(model=str(tiny_vlm), device="cpu"))
    qc.setup()
    caption.setup()
    assert qc._model is caption._model and qc._processor is caption._processor
