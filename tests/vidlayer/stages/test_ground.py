import dataclasses
import pickle
import typing

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from vidlayer.clip import Captions, Clip, Drop, Prompt
from vidlayer.config import PipelineError, parse_pipeline
from vidlayer.random_models.detector import FAMILIES, write_tiny_detector
from vidlayer.stages.base import registered
from vidlayer.stages.caption import split_caption
from vidlayer.stages.ground import (Detections, DetectorGround, DetectorGroundParams, box_iou, choose_prompts,
                                    dino_prompt, keyframes, span_tokens, subject_phrases)

CAPTION = "a cat sliding to the left in front of a brick wall, the camera static"
WIDTH, HEIGHT, FRAMES = 160, 96, 9


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As in a build, where a worker of this stage gets one CPU (`executors.limit_threads`); a tiny
    model gains nothing from more, and loses much when another process keeps the cores busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> dict[str, str]:
    """One tiny random checkpoint folder per detector family, written once for the module."""
    root = tmp_path_factory.mktemp("detectors")
    return {family: str(write_tiny_detector(root / family, family)) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def model(request, detectors) -> str:
    return detectors[request.param]


def grounder(model: str, **params) -> DetectorGround:
    stage = DetectorGround(DetectorGroundParams(model=model, **params))
    stage.setup()
    return stage


def make_clip(frames: np.ndarray, full: str = CAPTION, foreground: list[str] | None = None, key: str = "k") -> Clip:
    return Clip(key=key, input_key=key, path="", source="", captions=Captions(full, list(foreground or [])),
                frames=frames)


def test_backend_is_registered_with_simple_documented_params():
    assert registered()[("ground", "detector")] is DetectorGround
    hints = typing.get_type_hints(DetectorGroundParams)
    assert all(hints[f.name] in (int, float, bool, str) or typing.get_origin(hints[f.name]) is typing.Literal
               for f in dataclasses.fields(DetectorGroundParams))
    spec = parse_pipeline({"stages": [{"stage": "ground", "backend": "detector",
                                       "params": {"model": "/m", "on_miss": "drop", "keyframes": 5}}]}).stages[0]
    assert (spec.params.on_miss, spec.params.keyframes, spec.params.batch_size) == ("drop", 5, 4)
    with pytest.raises(PipelineError, match="on_miss"):
        parse_pipeline({"stages": [{"stage": "ground", "backend": "detector", "params": {"on_miss": "skip"}}]})


def test_the_stage_pickles_before_setup_as_ray_sends_it():
    stage = DetectorGround(DetectorGroundParams(model="/some/folder", score_threshold=0.2))
    copy = pickle.loads(pickle.dumps(stage))
    assert copy.params == stage.params and copy.batch_size == 4


def test_setup_explains_a_missing_model_and_bad_counts():
    with pytest.raises(ValueError, match="needs `model`"):
        DetectorGround(DetectorGroundParams()).setup()
    with pytest.raises(ValueError, match="keyframes and max_instances"):
        DetectorGround(DetectorGroundParams(model="/some/folder", keyframes=0)).setup()


def test_subject_phrases_are_the_foreground_captions_else_the_caption_subject():
    assert subject_phrases(Captions(CAPTION)) == [split_caption(CAPTION)[0]] == ["a cat sliding to the left"]
    given = Captions(CAPTION, ["a dog  running", "A dog running", "a red ball", " "])
    assert subject_phrases(given) == ["a dog running", "a red ball"]
    # Foreground captions with no words in them are as good as none.
    assert subject_phrases(Captions("fireworks", ["", "..."])) == ["fireworks"]
    assert subject_phrases(Captions("")) == []


def test_keyframes_are_evenly_spaced_and_distinct():
    assert keyframes(9, 3) == [0, 4, 8]
    assert keyframes(2, 3) == [0, 1]
    assert keyframes(5, 1) == [0]
    assert keyframes(0, 3) == []


def test_dino_prompt_is_lower_case_phrases_closed_by_full_stops_with_their_spans():
    text, spans = dino_prompt(["A Cat sliding", "a dog.jumping", "ball"])
    assert text == "a cat sliding. a dog jumping. ball."
    assert [text[start:end] for start, end in spans] == ["a cat sliding", "a dog jumping", "ball"]


def test_dino_phrase_spans_are_exactly_the_phrase_tokens(detectors):
    tokenizer = AutoProcessor.from_pretrained(detectors["grounding_dino"]).tokenizer
    phrases = ["a cat sliding", "a red ball", "a zebra"]
    text, spans = dino_prompt(phrases)
    encoded = tokenizer(text, return_offsets_mapping=True)
    for phrase, span in zip(phrases, spans):
        tokens = span_tokens(encoded["offset_mapping"], span)
        assert tokenizer.decode([encoded["input_ids"][i] for i in tokens]).replace(" ##", "") == phrase


def test_box_iou():
    box = np.array([0.0, 0.0, 10.0, 10.0])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert box_iou(box, others) == pytest.approx([1.0, 50 / 150, 0.0])


def detections(*found: tuple[int, float, tuple[float, float, float, float]]) -> Detections:
    """Detections from (phrase, score, box) triples."""
    return Detections(np.array([f[0] for f in found], int), np.array([f[1] for f in found]),
                      np.array([f[2] for f in found], float).reshape(-1, 4))


def test_a_subject_held_by_one_phrase_is_not_prompted_again_for_another():
    x0, x4 = (10, 10, 40, 40), (50, 10, 80, 40)  # subject X, which moves between keyframes 0 and 4
    y0, y4 = (10, 60, 30, 90), (12, 60, 32, 90)  # subject Y, nearly still
    found = {0: detections((0, 0.9, x0), (1, 0.5, y0)),
             4: detections((0, 0.6, x4), (1, 0.8, x4), (1, 0.4, y4))}
    prompts = choose_prompts(["a cat", "a dog"], found, max_instances=2, nms_iou=0.5)
    # "a dog" scores best on X in keyframe 4, but "a cat" holds X there: it is prompted on Y instead,
    # at the keyframe where it scores best on Y.
    assert prompts == [Prompt("a cat", 0, x0, 0.9), Prompt("a dog", 0, y0, 0.5)]
    assert choose_prompts(["a cat", "a dog"], found, max_instances=1, nms_iou=0.5) == [Prompt("a cat", 0, x0, 0.9)]
    # A phrase whose every box overlaps a held one, or that found nothing, gets no prompt.
    only_x = {0: detections((0, 0.9, x0), (1, 0.95, (11, 11, 41, 41))), 4: detections((0, 0.6, x4), (1, 0.3, x4))}
    assert choose_prompts(["a cat", "a dog", "a bird"], only_x, max_instances=3, nms_iou=0.5) == \
        [Prompt("a dog", 0, (11, 11, 41, 41), 0.95)]
    # With a looser overlap limit, the second box counts as a subject of its own.
    assert len(choose_prompts(["a cat", "a dog"], only_x, max_instances=2, nms_iou=0.9)) == 2
    assert choose_prompts(["a cat"], {}, max_instances=2, nms_iou=0.5) == []


def test_prompts_are_boxes_in_the_frame_for_the_caption_subject(model, square_frames):
    clip = grounder(model, score_threshold=0.0).process(make_clip(square_frames(FRAMES, WIDTH, HEIGHT)))
    assert len(clip.prompts) == 1
    prompt = clip.prompts[0]
    assert prompt.phrase == "a cat sliding to the left"
    assert prompt.frame in (0, 4, 8)
    x0, y0, x1, y1 = prompt.box
    assert 0 <= x0 and x0 + 1 <= x1 <= WIDTH and 0 <= y0 and y0 + 1 <= y1 <= HEIGHT
    assert 0 < prompt.score <= 1
    assert clip.metrics == {"ground_subjects": 1.0, "ground_score": prompt.score}


def test_foreground_captions_are_grounded_within_max_instances(model, square_frames):
    frames = square_frames(FRAMES, WIDTH, HEIGHT)
    phrases = ["a dog", "a red ball", "a man walking"]
    every = grounder(model, score_threshold=0.0, max_instances=3).process(make_clip(frames, foreground=phrases))
    assert sorted(prompt.phrase for prompt in every.prompts) == sorted(phrases)
    assert [prompt.score for prompt in every.prompts] == sorted((prompt.score for prompt in every.prompts),
                                                               reverse=True)
    best = grounder(model, score_threshold=0.0, max_instances=2).process(make_clip(frames, foreground=phrases))
    assert best.prompts == every.prompts[:2]
    assert best.metrics["ground_subjects"] == 2
    assert best.metrics["ground_score"] == pytest.approx(np.mean([p.score for p in every.prompts[:2]]))


def test_only_boxes_above_the_threshold_count(model, square_frames):
    frames = square_frames(FRAMES, WIDTH, HEIGHT)
    images, phrases = [frames[0], frames[8]], [["a cat"], ["a dog", "a ball"]]
    everything = grounder(model, score_threshold=0.0).detect(images, phrases)
    threshold = float(np.median(np.concatenate([d.scores for d in everything])))
    above = grounder(model, score_threshold=threshold).detect(images, phrases)
    for all_found, found in zip(everything, above):
        assert 0 < len(found.scores) < len(all_found.scores)
        # Every box lies in the frame, at least a pixel wide and tall (OWLv2 squares the image with padding).
        x0, y0, x1, y1 = all_found.boxes.T
        assert (x0 >= 0).all() and (x1 <= WIDTH).all() and (x1 - x0 >= 1).all()
        assert (y0 >= 0).all() and (y1 <= HEIGHT).all() and (y1 - y0 >= 1).all()
        kept = all_found.scores > threshold
        np.testing.assert_allclose(found.scores, all_found.scores[kept], atol=1e-6)
        np.testing.assert_allclose(found.boxes, all_found.boxes[kept], atol=1e-4)
        np.testing.assert_array_equal(found.phrases, all_found.phrases[kept])


def test_a_clip_with_nothing_above_the_threshold_is_kept_or_dropped(model, square_frames):
    clip = make_clip(square_frames(FRAMES, WIDTH, HEIGHT))
    kept = grounder(model, score_threshold=1.01).process(clip)
    assert kept.prompts == [] and kept.metrics == {"ground_subjects": 0.0, "ground_score": 0.0}
    dropper = grounder(model, score_threshold=1.01, on_miss="drop")
    with pytest.raises(Drop) as dropped:
        dropper.process(make_clip(clip.frames))
    assert dropped.value.reason == "no_subject_found" and "3 keyframes" in dropped.value.message
    # In a batch the drop takes the dropped clip's place; a caption without a subject is a miss too.
    results = dropper.process_batch([make_clip(clip.frames), make_clip(clip.frames, full="")])
    assert all(isinstance(r, Drop) and r.reason == "no_subject_found" for r in results)
    assert "names no subject" in results[1].message


def test_a_batch_finds_what_its_clips_find_one_by_one(model, square_frames):
    """One forward pass over clips of two sizes and different numbers of phrases changes nothing:
    a padded query never wins a box, and images of different sizes are not padded together."""
    stage = grounder(model, score_threshold=0.0, max_instances=3)
    clips = [
        lambda: make_clip(square_frames(FRAMES, WIDTH, HEIGHT), key="a"),
        lambda: make_clip(square_frames(FRAMES, WIDTH, HEIGHT, scene="astronaut"), key="b",
                          foreground=["a dog", "a red ball", "a man walking"]),
        lambda: make_clip(square_frames(FRAMES, 128, 112, scene="rocket"), key="c", foreground=["a horse"]),
    ]
    batched = stage.process_batch([make() for make in clips])
    for make, together in zip(clips, batched):
        alone = stage.process(make())
        assert len(together.prompts) == len(alone.prompts) > 0
        for a, b in zip(together.prompts, alone.prompts):
            assert (a.phrase, a.frame) == (b.phrase, b.frame)
            assert a.box == pytest.approx(b.box, abs=1e-3) and a.score == pytest.approx(b.score, abs=1e-5)
    # Down to every box: the same detections whether an image is alone or in a batch.
    images = [clip.frames[0] for clip in batched]
    phrases = [subject_phrases(clip.captions) for clip in batched]
    for image, image_phrases, together in zip(images, phrases, stage.detect(images, phrases)):
        alone = stage.detect([image], [image_phrases])[0]
        assert together.phrases.max() < len(image_phrases)
        np.testing.assert_array_equal(together.phrases, alone.phrases)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5)
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)


def test_the_model_runs_in_the_dtype_asked_for(model, square_frames):
    stage = grounder(model, score_threshold=0.0, dtype="bfloat16")
    assert stage._model.dtype == torch.bfloat16
    prompts = stage.process(make_clip(square_frames(FRAMES, WIDTH, HEIGHT))).prompts
    assert len(prompts) == 1 and 0 < prompts[0].score <= 1 and isinstance(prompts[0].score, float)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_detectors_bring_a_tokenizer_built_here(detectors, family):
    tokenizer = AutoProcessor.from_pretrained(detectors[family]).tokenizer
    ids = tokenizer("a cat sliding", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).strip() == "a cat sliding"
    assert len(ids) == 3  # words of the tokenizer's own vocabulary are one token each


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="family"):
        write_tiny_detector(tmp_path, "yolo")
