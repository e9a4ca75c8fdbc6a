import io
import logging
from collections import Counter
from functools import partial
from itertools import islice
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import webdataset as wds

from layert2v.data import BrokenDataError, DataConfig, LayerLoader, expand_shards, frame_indices
from layert2v.runs import ConfigError
from layert2v.train import _skipped
from vidlayer.io.shards import read_shard
from vidlayer.io.video import encode_video
from vidlayer.stages.write import layer_names

FRAMES, SIZE = 9, 32
# (shard, foreground counts of its samples): 6 + 4 + 2 samples with K = 1, 2, 3, and every
# shard holds an even number of each, so batches of 2 use them all even with one worker per shard.
LAYOUT = {0: [1, 2, 1, 3, 1, 2, 1, 3], 1: [2, 1, 2, 1]}
KEYS = {f"s{shard}-{i:02d}-k{k}": k for shard, ks in LAYOUT.items() for i, k in enumerate(ks)}


def _grey(values: np.ndarray) -> np.ndarray:
    return np.broadcast_to(values.astype(np.uint8)[:, None, None], (len(values), SIZE, SIZE)).copy()


def _rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(_grey(values)[..., None], 3, axis=-1)


def make_sample(key: str, k: int, frames: int = FRAMES, fps: float = 16.0) -> dict:
    """A VidLayer-style sample whose pixel values encode the layer and the frame number.

    full = 16 t, background = 200, fg_i = 40 + 30 i, alpha_i = 16 t + i (lossless, so exact).
    """
    t = np.arange(frames)
    encode = partial(encode_video, fps=fps, preset="ultrafast")
    names = layer_names(k)
    sample = {"__key__": key, "full.mp4": encode(_rgb(16 * t)), "bg.mp4": encode(_rgb(np.full(frames, 200)))}
    for i in range(k):
        sample[f"{names['fg'][i]}.mp4"] = encode(_rgb(np.full(frames, 40 + 30 * i)))
        sample[f"{names['alpha'][i]}.mp4"] = encode_video(_grey(16 * t + i), fps, lossless=True, preset="ultrafast")
    sample["json"] = {
        "key": key, "fps": fps, "frames": frames, "width": SIZE, "height": SIZE, "num_foregrounds": k,
        "layers": {"full": "full.mp4", "background": "bg.mp4", "foreground": [f"{n}.mp4" for n in names["fg"]],
                   "alpha": [f"{n}.mp4" for n in names["alpha"]]},
        "captions": {"full": f"{key} full", "background": f"{key} bg",
                     "foreground": [f"{key} fg{i}" for i in range(k)]},
    }
    return sample


def write_shard(path: Path, samples: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)
    return path


def write_layout(folder: Path, frames: int) -> Path:
    for shard, ks in LAYOUT.items():
        write_shard(folder / f"shard-{shard:06d}.tar",
                    [make_sample(f"s{shard}-{i:02d}-k{k}", k, frames) for i, k in enumerate(ks)])
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """data/shards/shard-00000{0,1}.tar with the samples in KEYS."""
    return write_layout(tmp_path_factory.mktemp("data") / "shards", FRAMES)


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    """The same samples with one frame each: cheap to decode, for tests about order and counts."""
    return write_layout(tmp_path_factory.mktemp("stills"), 1)


def config(shards, **overrides) -> DataConfig:
    options = dict(shards=str(shards), height=24, width=32, batch_size=2, num_frames=FRAMES, repeat=False,
                   caption_dropout=0.0, shuffle_buffer=8)
    return DataConfig(**{**options, **overrides})


def test_batch_holds_named_layers_in_slot_order_and_range(shards):
    for batch in LayerLoader(config(shards)):
        k = batch.layout.num_foregrounds
        assert list(batch.videos) == list(batch.layout.names)
        for name, video in batch.videos.items():
            assert video.dtype == torch.float32
            assert video.shape == (2, 1 if name.startswith("alpha") else 3, FRAMES, 24, 32)
            assert video.min() >= (0 if name.startswith("alpha") else -1) and video.max() <= 1
        t = torch.arange(FRAMES)
        for i in range(k):
            expected = ((16 * t + i) / 255).view(1, 1, FRAMES, 1, 1).expand(2, 1, FRAMES, 24, 32)
            assert torch.allclose(batch.videos[f"alpha{i}"], expected, atol=1e-6)
            assert torch.allclose(batch.videos[f"fg{i}"], torch.tensor((40 + 30 * i) / 127.5 - 1), atol=0.05)
        assert torch.allclose(batch.videos["background"], torch.tensor(200 / 127.5 - 1), atol=0.05)
        slots = [[f"{key} full", f"{key} bg", *(f"{key} fg{i}" for i in range(k))] for key in batch.keys]
        assert batch.prompts == slots


def test_alpha_only_decodes_just_the_mattes(shards):
    for batch in LayerLoader(config(shards, alpha_only=True, repeat=False)):
        k = batch.layout.num_foregrounds
        assert list(batch.videos) == [f"alpha{i}" for i in range(k)]
        assert batch.videos["alpha0"].shape[1] == 1


def test_lower_rate_takes_every_other_frame(shards):
    batch = next(iter(LayerLoader(config(shards, fps=8.0, num_frames=5, random_crop=False, height=16, width=16))))
    frames = torch.arange(0, FRAMES, 2)
    assert torch.allclose(batch.videos["alpha0"][:, 0, :, 0, 0], (16 * frames / 255).expand(2, 5), atol=1e-5)
    assert torch.allclose(batch.videos["full"][:, 0, :, 8, 8], (16 * frames / 127.5 - 1).expand(2, 5), atol=0.05)
    assert frame_indices(30.0, 16.0, 5) == [0, 1, 3, 5, 7]


def test_clips_too_short_at_the_rate_are_skipped_and_counted(shards, caplog):
    loader = LayerLoader(config(shards, fps=8.0, num_frames=9))  # needs 17 frames, the clips have 9
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="gave no batch"):
        list(loader)
    assert loader.skipped == {"too_short": len(KEYS)}
    assert "9 frames at 16 fps" in caplog.text


def test_every_batch_has_one_foreground_count_and_every_sample_appears(stills):
    seen = Counter()
    for batch in LayerLoader(config(stills, num_frames=1)):
        assert {KEYS[key] for key in batch.keys} == {batch.layout.num_foregrounds}
        seen.update(batch.keys)
    assert seen == Counter(KEYS.keys())


def test_foreground_filters_skip_and_count(stills):
    stage2 = LayerLoader(config(stills, num_frames=1, foregrounds=[1]))
    assert {key for batch in stage2 for key in batch.keys} == {key for key, k in KEYS.items() if k == 1}
    assert stage2.skipped == {"foregrounds_filtered": 6}
    capped = LayerLoader(config(stills, num_frames=1, max_foregrounds=2))
    assert {batch.layout.num_foregrounds for batch in capped} == {1, 2}
    assert capped.skipped == {"too_many_foregrounds": 2}


def test_train_and_holdout_splits_partition_the_clips(stills):
    seen = {split: {key for batch in LayerLoader(config(stills, num_frames=1, batch_size=1, split=split, holdout=0.5))
                    for key in batch.keys} for split in ("train", "holdout")}
    assert seen["train"] and seen["holdout"] and not seen["train"] & seen["holdout"]
    assert seen["train"] | seen["holdout"] == set(KEYS)


def test_sample_missing_a_member_is_skipped_with_a_warning(tmp_path, caplog):
    broken = make_sample("broken", 2)
    del broken["alpha1.mp4"]
    path = write_shard(tmp_path / "shard-000000.tar", [make_sample("a", 1), broken, make_sample("b", 1)])
    loader = LayerLoader(config(path))
    with caplog.at_level(logging.WARNING):
        assert [sorted(batch.keys) for batch in loader] == [["a", "b"]]
    assert loader.skipped == {"missing_member": 1}
    assert "broken" in caplog.text and "alpha1.mp4" in caplog.text


def test_sample_that_fails_to_decode_leaves_a_short_batch(tmp_path):
    corrupt = {**make_sample("corrupt", 1), "full.mp4": b"not a video"}
    path = write_shard(tmp_path / "shard-000000.tar", [make_sample("a", 1), corrupt])
    loader = LayerLoader(config(path))
    assert [batch.keys for batch in loader] == [["a"]]
    assert loader.skipped == {"decode_error": 1}


def _audio_only() -> bytes:
    """A valid media file without a video stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return buffer.getvalue()


def _edit_json(**changes):
    return lambda sample: sample["json"].update(changes)


def _edit_layers(**changes):
    return lambda sample: sample["json"]["layers"].update(changes)


def _edit_members(**members):
    return lambda sample: sample.update(members)


SHORT = make_sample("short", 1, frames=5)
# How a sample breaks -> the reason it is counted under. The header is read before any decoding.
BROKEN = {
    "metadata not JSON": (_edit_members(json=b"not json"), "bad_json"),
    "metadata a list": (_edit_members(json=b"[1, 2]"), "bad_json"),
    "metadata nested too deep": (_edit_members(json=b"[" * 100_000 + b"]" * 100_000), "bad_json"),
    "fps not a number": (_edit_json(fps=float("nan")), "bad_json"),
    "caption not text": (lambda s: s["json"]["captions"].update(full=5), "bad_json"),
    "layer named __key__": (_edit_layers(full="__key__"), "bad_layers"),
    "layers listed for another count": (_edit_layers(foreground=["fg.mp4", "fg.mp4"], alpha=["alpha.mp4"] * 2),
                                        "bad_layers"),
    "layer member missing": (lambda s: s.pop("alpha.mp4"), "missing_member"),
    "video that does not decode": (_edit_members(**{"full.mp4": b"not a video"}), "decode_error"),
    "member without a video stream": (_edit_members(**{"fg.mp4": _audio_only()}), "decode_error"),
    "layers of different lengths": (_edit_members(**{"bg.mp4": SHORT["bg.mp4"]}), "mismatched_layers"),
    "layers of different sizes": (_edit_members(**{"bg.mp4": encode_video(_rgb(np.zeros(FRAMES)).repeat(2, axis=1),
                                                                          16.0, preset="ultrafast")}),
                                  "mismatched_layers"),
    "videos shorter than the metadata says": (_edit_members(**{n: v for n, v in SHORT.items() if n.endswith(".mp4")}),
                                              "decode_error"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_samples_are_skipped_counted_and_named(tmp_path, caplog, case):
    breaks, reason = BROKEN[case]
    broken = make_sample("broken", 1)
    breaks(broken)
    path = write_shard(tmp_path / "shard-000000.tar", [make_sample(key, 1) for key in "abc"] + [broken])
    loader = LayerLoader(config(path, shuffle_buffer=0))
    with caplog.at_level(logging.WARNING):
        keys = [key for batch in loader for key in batch.keys]
    assert keys and "broken" not in keys
    assert loader.skipped == {reason: 1}
    assert "skipping sample broken" in caplog.text


def test_a_layer_name_never_sends_the_key_to_the_decoder(tmp_path):
    # The key is any text, here the path of a video (it could be a URL): a layer named
    # `__key__` would have FFmpeg open it, reading a local file or making a request.
    secret = tmp_path / "secret"
    secret.write_bytes(make_sample("x", 1)["full.mp4"])
    crafted = make_sample(str(secret), 1)
    crafted["json"]["layers"]["full"] = "__key__"
    del crafted["full.mp4"]
    path = write_shard(tmp_path / "shard-000000.tar", [crafted, make_sample("a", 1), make_sample("b", 1)])
    loader = LayerLoader(config(path, shuffle_buffer=0))
    assert [batch.keys for batch in loader] == [["a", "b"]]
    assert loader.skipped == {"bad_layers": 1}


def test_too_many_broken_samples_stop_the_loader_naming_the_reasons(tmp_path, stills):
    broken = [{**make_sample(f"bad{i}", 1), "json": b"not json"} for i in range(2)]
    broken.append({**make_sample("corrupt", 1), "full.mp4": b"not a video"})
    path = write_shard(tmp_path / "shard-000000.tar", [make_sample(f"good{i}", 1) for i in range(4)] + broken)
    with pytest.raises(BrokenDataError, match=r"3 skips for broken data in epoch 0 .*\(bad_json 2, "
                                              r"decode_error 1\), more than data.max_skipped=2") as caught:
        list(LayerLoader(config(path, max_skipped=2)))
    assert isinstance(caught.value, ConfigError)  # `vidlayer train` prints it as one line
    loader = LayerLoader(config(path, max_skipped=3))
    assert list(loader) and loader.skipped == {"bad_json": 2, "decode_error": 1}
    # Samples the config leaves out are not broken.
    assert list(LayerLoader(config(stills, num_frames=1, foregrounds=[1], max_skipped=0)))


def test_training_reports_what_its_loader_skipped(tmp_path):
    broken = {**make_sample("corrupt", 1), "full.mp4": b"not a video"}
    loader = LayerLoader(config(write_shard(tmp_path / "shard-000000.tar", [make_sample("a", 1), broken])))
    list(loader)
    assert _skipped(loader) == {"decode_error": 1}


@pytest.mark.parametrize("spec, kind", [
    ("https://host/shard-{000000..000001}.tar", "is a URL"),
    ("s3://bucket/shard-000000.tar", "is a URL"),
    ("file:///data/shard-000000.tar", "is a URL"),
    ("pipe:false", "runs a shell command"),
])
def test_urls_are_followed_only_when_their_scheme_is_allowed(spec, kind):
    scheme = spec.partition(":")[0]
    with pytest.raises(ValueError, match=rf"{kind} \({scheme}:\).*--set data.allowed_schemes=\[{scheme}\]"):
        LayerLoader(config(spec))
    with pytest.raises(ValueError, match=kind):
        expand_shards(spec, ["http"])  # another scheme is no help
    assert expand_shards(spec, [scheme])[0].startswith(f"{scheme}:")


def test_caption_dropout_blanks_whole_samples_at_the_set_rate(shards, tmp_path):
    stills = write_shard(tmp_path / "shard-000000.tar", [make_sample(f"still{i}", 1, frames=1) for i in range(24)])
    loader = LayerLoader(config(stills, caption_dropout=0.3, num_frames=1, repeat=True, batch_size=8))
    draws = [p for batch in islice(loader, 30) for p in batch.prompts]
    dropped = sum(p == ["", "", ""] for p in draws)
    assert all(p == ["", "", ""] or "" not in p for p in draws)
    assert 40 <= dropped <= 105  # 240 draws at 0.3: 72 expected, sd 7
    assert all("" not in p for batch in LayerLoader(config(shards)) for p in batch.prompts)
    slots = [p for batch in LayerLoader(config(shards, slot_dropout=0.5)) for p in batch.prompts]
    assert any("" in p and set(p) != {""} for p in slots)


def test_shard_sources(shards, tmp_path):
    listed = [str(shards / "shard-000000.tar"), str(shards / "shard-000001.tar")]
    assert expand_shards(f"{shards}/shard-{{000000..000001}}.tar") == listed
    assert expand_shards(shards) == expand_shards(shards.parent) == expand_shards(listed) == listed
    assert expand_shards("https://host/shard-{000000..000002}.tar", ["https"])[2] == "https://host/shard-000002.tar"
    with pytest.raises(ValueError, match="nowhere/shard-"):
        LayerLoader(config(tmp_path / "nowhere/shard-{000000..000003}.tar"))
    with pytest.raises(ValueError, match="do not exist"):
        expand_shards(f"{shards}/shard-{{000000..000002}}.tar")
    with pytest.raises(ValueError, match="no shards found"):
        expand_shards(tmp_path)
    piped = LayerLoader(config(f"pipe:cat {listed[1]}", shuffle_buffer=0, allowed_schemes=["pipe"]))
    assert [batch.keys for batch in piped] == [["s1-00-k2", "s1-02-k2"], ["s1-01-k1", "s1-03-k1"]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_batch_that_would_have_come_next(stills, num_workers):
    # 6 batches an epoch: resume mid-epoch, right at the end of one, and inside the next.
    cfg = config(stills, num_frames=1, repeat=True, num_workers=num_workers, caption_dropout=0.5, height=16, width=16)
    reference = list(islice(LayerLoader(cfg), 12))
    assert [b.keys for b in reference[:6]] != [b.keys for b in reference[6:]]
    for taken, position in [(4, (0, 4)), (6, (0, 6)), (9, (1, 3))]:
        loader = LayerLoader(cfg)
        assert [b.keys for b in islice(loader, taken)] == [b.keys for b in reference[:taken]]
        state = loader.state_dict()
        assert (state["epoch"], state["batches_in_epoch"], state["seed"]) == (*position, 0)
        resumed = LayerLoader(cfg)
        resumed.load_state_dict(state)
        following = list(islice(resumed, 2))
        assert [b.keys for b in following] == [b.keys for b in reference[taken:taken + 2]]
        assert following[0].prompts == reference[taken].prompts
        assert torch.equal(following[0].videos["full"], reference[taken].videos["full"])
    with pytest.raises(ValueError, match="seed"):
        LayerLoader(cfg).load_state_dict({**state, "seed": 1})


def test_workers_decode_every_sample_and_report_skips(stills):
    loader = LayerLoader(config(stills, num_frames=1, num_workers=2, foregrounds=[1, 2]))
    assert Counter(key for batch in loader for key in batch.keys) == Counter(k for k, n in KEYS.items() if n < 3)
    assert loader.skipped == {"foregrounds_filtered": 2}


def test_reads_a_vidlayer_build(inline_build):
    out, _ = inline_build
    expected = {s["__key__"]: s["json"] for shard in sorted((out / "shards").glob("*.tar")) for s in read_shard(shard)}
    loader = LayerLoader(DataConfig(shards=str(out), height=64, width=96, batch_size=1, repeat=False,
                                    caption_dropout=0.0))
    batches = list(loader)
    assert sorted(key for b in batches for key in b.keys) == sorted(expected)
    for batch in batches:
        meta = expected[batch.keys[0]]
        captions = meta["captions"]
        assert batch.layout.num_foregrounds == meta["num_foregrounds"]
        assert batch.prompts == [[captions["full"], captions["background"], *captions["foreground"]]]
        assert batch.videos["full"].shape == (1, 3, 17, 64, 96)
        assert 0 < batch.videos["alpha0"].max() <= 1


@pytest.mark.parametrize("bad", [{"num_frames": 16}, {"caption_dropout": 1.5}, {"max_foregrounds": 9},
                                 {"foregrounds": [0]}, {"batch_size": 0}, {"split": "val"}, {"max_skipped": -1},
                                 {"allowed_schemes": "https"}, {"allowed_schemes": ["HTTPS"]}])
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        DataConfig(**{**dict(shards="x", height=8, width=8, batch_size=1), **bad})
