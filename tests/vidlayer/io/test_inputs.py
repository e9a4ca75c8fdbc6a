import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidlayer.io.inputs import InputError, derive_key, discover


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_folder_finds_videos_recursively_with_sidecars(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "a.txt", "a dog on a beach\n".encode())
    touch(tmp_path / "sub" / "b.MOV")
    touch(tmp_path / "sub" / "b.json", json.dumps({"caption": "c", "fg_caption": ["f0", "f1"], "bg_caption": "b"}).encode())
    touch(tmp_path / "sub" / "c.webm")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden" / "d.mp4")
    items = {i.source: i for i in discover(tmp_path)}
    assert sorted(items) == ["a.mp4", "sub/b.MOV", "sub/c.webm"]
    assert items["a.mp4"].caption == "a dog on a beach"
    assert (items["sub/b.MOV"].fg_captions, items["sub/b.MOV"].bg_caption) == (("f0", "f1"), "b")
    assert items["sub/c.webm"].caption is None and items["sub/c.webm"].reject_reason is None
    assert items["a.mp4"].path == str(tmp_path / "a.mp4")


def test_keys_are_stable_unique_and_webdataset_safe(tmp_path):
    touch(tmp_path / "x.y.mp4")
    touch(tmp_path / "x_y.mp4")
    keys = [i.key for i in discover(tmp_path)]
    assert len(set(keys)) == 2 and all("." not in k for k in keys)
    assert keys == [i.key for i in discover(tmp_path)]
    assert derive_key("x.y.mp4") != derive_key("x_y.mp4")


def test_bad_sidecars_are_recorded_not_raised(tmp_path):
    touch(tmp_path / "latin.mp4")
    touch(tmp_path / "latin.txt", "caf\xe9".encode("latin-1"))
    touch(tmp_path / "broken.mp4")
    touch(tmp_path / "broken.json", b"{not json")
    touch(tmp_path / "wrongtype.mp4")
    touch(tmp_path / "wrongtype.json", json.dumps({"caption": 3}).encode())
    reasons = {i.source: i.reject_reason for i in discover(tmp_path)}
    assert reasons == {"broken.mp4": "caption_invalid", "latin.mp4": "caption_not_utf8",
                       "wrongtype.mp4": "caption_invalid"}


def test_broken_symlink_is_an_input(tmp_path):
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "missing-target.mp4")
    assert [i.source for i in discover(tmp_path)] == ["gone.mp4"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_formats(tmp_path, fmt):
    rows = [{"path": "v/a.mp4", "caption": "one", "key": "k1", "fg_caption": None},
            {"path": "b.mp4", "caption": "two", "key": None, "fg_caption": "dog"}]
    manifest = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        manifest.write_text("path,caption,key,fg_caption\nv/a.mp4,one,k1,\nb.mp4,two,,dog\n")
    elif fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), manifest)
    items = discover(manifest)
    assert [i.key for i in items][0] == "k1" and items[1].key == derive_key("b.mp4")
    assert items[0].path == str(tmp_path / "v" / "a.mp4")
    assert items[1].fg_captions == ("dog",) and items[1].caption == "two"


def test_manifest_paths_cannot_escape_the_root(tmp_path):
    manifest = tmp_path / "data" / "m.jsonl"
    manifest.parent.mkdir()
    lines = [{"path": "../secret.mp4", "caption": "x"}, {"path": "/etc/passwd", "caption": "x"},
             {"path": "ok/../fine.mp4", "caption": "x"}]
    manifest.write_text("\n".join(json.dumps(r) for r in lines))
    reasons = [i.reject_reason for i in discover(manifest)]
    assert reasons == ["path_outside_root", "path_outside_root", None]


def test_manifest_duplicate_and_invalid_keys_become_rejected_rows(tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": "a.mp4", "key": "same"}, {"path": "b.mp4", "key": "same"}, {"path": "c.mp4", "key": "a.b"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    items = discover(manifest)
    assert [i.reject_reason for i in items] == [None, "duplicate_key", "invalid_key"]
    assert len({i.key for i in items}) == 3


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "does not exist"),
    ("m.txt", b"x", "neither a folder nor a manifest"),
    ("m.jsonl", b"[1, 2]\n", "not a JSON object"),
    ("m.csv", b"caption\nno path column\n", "has no 'path'"),
    ("m.parquet", b"garbage", "cannot read manifest"),
])
def test_unusable_input_is_one_clear_error(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message):
        discover(tmp_path / name)
