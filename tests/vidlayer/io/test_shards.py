import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from vidlayer.io.shards import (MAX_SAMPLE_BYTES, SampleError, ShardSink, UnsafeTarError, decode_layers,
                                finish_or_discard_parts, layer_members, parse_metadata, read_shard)
from vidlayer.io.video import encode_video


def sample(key, size=10):
    return {"__key__": key, "full.mp4": b"v" * size, "json": b'{"key": "%s"}' % key.encode()}


def test_sink_commits_before_a_shard_becomes_visible(tmp_path):
    seen = []

    def on_commit(name):
        # At commit time the shard exists only as .part; the rename comes after.
        seen.append((name, (tmp_path / name).exists(), (tmp_path / (name + ".part")).exists()))

    sink = ShardSink(tmp_path, start_index=3, max_samples=2, max_bytes=10**9, on_commit=on_commit)
    names = [sink.write_group([sample("a")]), sink.write_group([sample("b")]), sink.write_group([sample("c")])]
    sink.close()
    assert names == ["shard-000003.tar", "shard-000003.tar", "shard-000004.tar"]
    assert seen == [("shard-000003.tar", False, True), ("shard-000004.tar", False, True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000003.tar", "shard-000004.tar"]


def test_an_input_never_straddles_two_shards(tmp_path):
    sink = ShardSink(tmp_path, 0, max_samples=3, max_bytes=10**9, on_commit=lambda name: None)
    first = sink.write_group([sample("a0"), sample("a1")])
    second = sink.write_group([sample("b0"), sample("b1")])  # would overflow: goes to a new shard
    sink.close()
    assert (first, second) == ("shard-000000.tar", "shard-000001.tar")
    assert [s["__key__"] for s in read_shard(tmp_path / second)] == ["b0", "b1"]


def test_size_limit_rolls_between_inputs(tmp_path):
    sink = ShardSink(tmp_path, 0, max_samples=100, max_bytes=1000, on_commit=lambda name: None)
    names = [sink.write_group([sample(f"k{i}", size=600)]) for i in range(3)]
    sink.close()
    assert names == ["shard-000000.tar", "shard-000000.tar", "shard-000001.tar"]


def test_written_shards_read_back_with_webdataset(tmp_path):
    sink = ShardSink(tmp_path, 0, max_samples=10, max_bytes=10**9, on_commit=lambda name: None)
    sink.write_group([sample("x"), sample("y")])
    sink.close()
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False)]
    assert keys == ["x", "y"]
    assert [s["json"] for s in read_shard(tmp_path / "shard-000000.tar")] == [{"key": "x"}, {"key": "y"}]


def test_recovery_finishes_committed_parts_and_deletes_the_rest(tmp_path):
    (tmp_path / "shard-000000.tar.part").write_bytes(b"committed")
    (tmp_path / "shard-000001.tar.part").write_bytes(b"uncommitted")
    finish_or_discard_parts(tmp_path, committed={"shard-000000.tar"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]


def crafted_tar(path, name, kind=tarfile.REGTYPE):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = b"evil"
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            info.linkname = "/etc/passwd"
            tar.addfile(info)


@pytest.mark.parametrize("name, kind", [
    ("../escape.json", tarfile.REGTYPE),
    ("/abs/path.json", tarfile.REGTYPE),
    ("key/../../x.json", tarfile.REGTYPE),
    ("link.json", tarfile.SYMTYPE),
    ("hard.json", tarfile.LNKTYPE),
    ("file:/abs/x.json", tarfile.REGTYPE),  # a name that FFmpeg or webdataset would open as a URL
    ("http://host/x.json", tarfile.REGTYPE),
    ("C:x.json", tarfile.REGTYPE),
    ("key\\..\\x.json", tarfile.REGTYPE),
])
def test_unsafe_members_are_refused(tmp_path, name, kind):
    crafted_tar(tmp_path / "bad.tar", name, kind)
    with pytest.raises(UnsafeTarError):
        list(read_shard(tmp_path / "bad.tar"))


def header_only_tar(path, name, size, kind=tarfile.REGTYPE, realsize=None):
    """A tar of a few KB whose one member declares `size` bytes (a sparse one: `realsize`) it does not hold."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    if realsize is not None:  # GNU sparse: the size read back is the `realsize` field, its holes read as zeros
        header[483:495] = b"%011o\0" % realsize
        header[148:156] = b"        "
        header[148:156] = b"%06o\0 " % sum(header[:512])
    path.write_bytes(bytes(header) + b"\0" * 4096)


def test_members_declaring_more_than_a_sample_may_hold_are_refused_before_reading(tmp_path):
    header_only_tar(tmp_path / "huge.tar", "clip.full.mp4", size=2 * 2**30)  # 2 GiB declared, 4 KB held
    with pytest.raises(UnsafeTarError, match="refused before reading"):
        list(read_shard(tmp_path / "huge.tar"))
    assert MAX_SAMPLE_BYTES < 2 * 2**30
    header_only_tar(tmp_path / "meta.tar", "clip.json", size=2**21)
    with pytest.raises(UnsafeTarError, match="metadata"):
        list(read_shard(tmp_path / "meta.tar"))
    with tarfile.open(tmp_path / "two.tar", "w") as tar:  # members of one sample count together
        for ext in ("full.mp4", "bg.mp4"):
            info = tarfile.TarInfo(f"clip.{ext}")
            info.size = 600
            tar.addfile(info, io.BytesIO(b"v" * 600))
    with pytest.raises(UnsafeTarError, match="1,200 bytes"):
        list(read_shard(tmp_path / "two.tar", max_sample_bytes=1000))


def test_sparse_members_are_refused(tmp_path):
    header_only_tar(tmp_path / "sparse.tar", "clip.full.mp4", size=0, kind=tarfile.GNUTYPE_SPARSE, realsize=2**26)
    with tarfile.open(tmp_path / "sparse.tar") as tar:
        assert tar.getmembers()[0].size == 2**26  # what reading it would allocate
    with pytest.raises(UnsafeTarError, match="sparse"):
        list(read_shard(tmp_path / "sparse.tar"))


def test_reading_streams_and_reads_only_what_is_asked(tmp_path):
    with tarfile.open(tmp_path / "many.tar", "w") as tar:
        for i in range(3000):
            for ext, data in (("json", b"{}" if i < 2 else b"not json"), ("full.mp4", b"v" * 10)):
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    samples = read_shard(tmp_path / "many.tar", load=lambda key, ext: key < "s00002")
    first, second, third = next(samples), next(samples), next(samples)  # lazily, one at a time
    assert first == {"__key__": "s00000", "json": {}, "full.mp4": b"v" * 10}
    assert third == {"__key__": "s00002", "json": 8, "full.mp4": 10}  # not read: their sizes stand in
    assert sum(1 for _ in samples) == 2997  # the broken metadata further on is never read
    with pytest.raises(SampleError, match="s00002.*not valid JSON"):
        list(read_shard(tmp_path / "many.tar"))


def test_compressed_tars_are_not_read(tmp_path):
    with tarfile.open(tmp_path / "shard.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("a.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(tarfile.ReadError):
        list(read_shard(tmp_path / "shard.tar.gz"))


@pytest.mark.parametrize("data, message", [
    (b"[1, 2]", "object, not \\[1, 2\\]"), (b"3", "object, not 3"), (b"not json", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "RecursionError"), (b"\xff\xfe", "not valid JSON"),
])
def test_metadata_must_be_a_json_object(data, message):
    with pytest.raises(SampleError, match=message) as caught:
        parse_metadata(data)
    assert caught.value.reason == "bad_json"
    assert parse_metadata(b'{"fps": 16}') == {"fps": 16}


LAYERS = {"full": "full.mp4", "background": "bg.mp4", "foreground": ["fg0.mp4", "fg1.mp4"],
          "alpha": ["alpha0.mp4", "alpha1.mp4"]}
MEMBERS = {"__key__": "https://host/x", "__url__": "/etc/passwd", "json": b"{}",
           **{name: b"mp4" for name in ("full.mp4", "bg.mp4", "fg0.mp4", "fg1.mp4", "alpha0.mp4", "alpha1.mp4")}}


def test_layer_members_by_role():
    assert layer_members({"layers": LAYERS}, MEMBERS) == {
        "full": "full.mp4", "background": "bg.mp4", "fg0": "fg0.mp4", "alpha0": "alpha0.mp4",
        "fg1": "fg1.mp4", "alpha1": "alpha1.mp4"}


@pytest.mark.parametrize("layers, reason", [
    ({**LAYERS, "full": "__key__"}, "bad_layers"),  # the key is any text: a URL or a path for FFmpeg
    ({**LAYERS, "background": "__url__"}, "bad_layers"),
    ({**LAYERS, "foreground": ["fg0.mp4", "../fg1.mp4"]}, "bad_layers"),
    ({**LAYERS, "alpha": ["alpha0.mp4", "alpha1.mp4\n"]}, "bad_layers"),
    ({**LAYERS, "full": ["full.mp4"]}, "bad_layers"),
    ({**LAYERS, "alpha": ["alpha0.mp4"]}, "bad_layers"),
    ({**LAYERS, "foreground": "fg0.mp4"}, "bad_layers"),
    ("full.mp4", "bad_layers"),
    (None, "bad_layers"),
    ({**LAYERS, "full": "json"}, "missing_member"),  # present, but not a video's bytes
    ({**LAYERS, "foreground": ["fg0.mp4", "fg7.mp4"]}, "missing_member"),
])
def test_layer_names_that_are_not_plain_members_are_refused(layers, reason):
    with pytest.raises(SampleError) as caught:
        layer_members({"layers": layers}, {**MEMBERS, "json": {}})
    assert caught.value.reason == reason


def test_decode_layers_names_what_does_not_decode_or_align():
    clip = encode_video(np.zeros((3, 16, 16, 3), np.uint8), 8.0, preset="ultrafast")
    matte = encode_video(np.zeros((3, 16, 16), np.uint8), 8.0, lossless=True, preset="ultrafast")
    videos = decode_layers({"full": clip, "alpha0": matte})
    assert videos["full"].shape == (3, 16, 16, 3) and videos["alpha0"].shape == (3, 16, 16)
    assert decode_layers({"full": clip}, max_frames=2)["full"].shape[0] == 2
    with pytest.raises(SampleError, match="layer alpha0 does not decode") as caught:
        decode_layers({"full": clip, "alpha0": b"not a video"})
    assert caught.value.reason == "decode_error"
    short = encode_video(np.zeros((2, 16, 16, 3), np.uint8), 8.0, preset="ultrafast")
    with pytest.raises(SampleError, match="full 3x16x16, background 2x16x16") as caught:
        decode_layers({"full": clip, "background": short})
    assert caught.value.reason == "mismatched_layers"
