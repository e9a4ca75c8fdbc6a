import io
import tarfile

import pytest
import webdataset as wds

from vidlayer.io.shards import ShardSink, UnsafeTarError, finish_or_discard_parts, read_shard


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
])
def test_unsafe_members_are_refused(tmp_path, name, kind):
    crafted_tar(tmp_path / "bad.tar", name, kind)
    with pytest.raises(UnsafeTarError):
        list(read_shard(tmp_path / "bad.tar"))
