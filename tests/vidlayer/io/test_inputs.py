import dataclasses
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidlayer.io.inputs import KEY_PATTERN, InputError, derive_key, discover


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
    assert sorted(items) == [".hidden/d.mp4", "a.mp4", "sub/b.MOV", "sub/c.webm"]
    assert items[".hidden/d.mp4"].reject_reason == "hidden_file"
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
             {"path": "ok/../fine.mp4", "caption": "x"}, {"path": "/"}, {"path": "."}]
    manifest.write_text("\n".join(json.dumps(r) for r in lines))
    reasons = [i.reject_reason for i in discover(manifest)]
    assert reasons == ["path_outside_root", "path_outside_root", None, "path_outside_root", "path_outside_root"]


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


def storable(items):
    """Every field can go into the parquet manifest (lone surrogates would raise UnicodeEncodeError)."""
    pa.Table.from_pylist([dataclasses.asdict(i) for i in items])
    return items


def test_captions_utf8_cannot_store_are_rejected(tmp_path):
    folder = tmp_path / "folder"
    for name, captions in [("cap", {"caption": "\ud800"}), ("fg", {"caption": "ok", "fg_caption": ["dog", "\udcff"]}),
                           ("bg", {"caption": "ok", "bg_caption": "x\udfff"}), ("good", {"caption": "caf\u00e9"})]:
        touch(folder / f"{name}.mp4")
        touch(folder / f"{name}.json", json.dumps(captions).encode())  # json escapes the surrogates: valid UTF-8
    items = {i.source: i for i in storable(discover(folder))}
    assert {s: i.reject_reason for s, i in items.items()} == {
        "bg.mp4": "caption_invalid", "cap.mp4": "caption_invalid", "fg.mp4": "caption_invalid", "good.mp4": None}
    assert items["cap.mp4"].reject_message == "caption sidecar: caption is not valid UTF-8 text: \\ud800"
    assert items["fg.mp4"].caption is None and items["good.mp4"].caption == "caf\u00e9"

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"path": "a.mp4", "key": "k", "caption": "\\ud800"}\n{"path": "b.mp4", "key": "k"}\n')
    items = storable(discover(jsonl))
    assert [i.reject_reason for i in items] == ["caption_invalid", "duplicate_key"]
    assert len({i.key for i in items}) == 2

    csv = tmp_path / "m.csv"  # one cell that is not UTF-8 makes Arrow read the column as bytes
    csv.write_bytes(b"path,caption\na.mp4,caf\xe9\nb.mp4,fine\n")
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["a.mp4", "b.mp4"], "caption": pa.array([b"caf\xe9", b"fine"], pa.binary())}),
                   parquet)
    for manifest in (csv, parquet):
        items = storable(discover(manifest))
        assert [(i.reject_reason, i.caption) for i in items] == [("caption_invalid", None), (None, "fine")]
        assert items[0].reject_message == "caption is not valid UTF-8 text: caf\\xe9"


def test_deeply_nested_sidecar_is_rejected_not_raised(tmp_path):
    touch(tmp_path / "deep.mp4")
    touch(tmp_path / "deep.json", b"[" * 100_000)
    [item] = discover(tmp_path)
    assert (item.reject_reason, item.reject_message) == ("caption_invalid", "caption sidecar: JSON nested too deeply")


def test_names_that_are_not_utf8_get_a_storable_row(tmp_path):
    root = os.fsencode(tmp_path)
    os.makedirs(root + b"/dir\xfe")
    for name in (b"/bad\xff.mp4", b"/dir\xfe/ok.mp4", b"/fine.mp4"):
        with open(root + name, "wb") as f:
            f.write(b"123")
    items = {i.source: i for i in storable(discover(tmp_path))}
    assert sorted(items) == ["bad\\xff.mp4", "dir\\xfe/ok.mp4", "fine.mp4"]
    bad = items["bad\\xff.mp4"]
    assert (bad.reject_reason, bad.path) == ("path_not_utf8", f"{tmp_path}/bad\\xff.mp4")
    assert "rename it" in bad.reject_message and items["fine.mp4"].reject_reason is None
    assert all(KEY_PATTERN.match(i.key) for i in items.values()) and len({i.key for i in items.values()}) == 3

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "\\ud800.mp4"}\n{"path": "fine.mp4"}\n')
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"path\nbad\xff.mp4\nfine.mp4\n")
    for manifest, shown in ((manifest, "\\ud800.mp4"), (csv, "bad\\xff.mp4")):
        items = storable(discover(manifest))
        assert [(i.source, i.reject_reason) for i in items] == [(shown, "path_not_utf8"), ("fine.mp4", None)]
        assert KEY_PATTERN.match(items[0].key)


def test_links_cannot_leave_the_root(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "root"
    touch(outside / "secret.mp4")
    touch(outside / "secret.txt", b"private words")
    touch(outside / "more" / "v.mp4")
    touch(root / "real" / "a.mp4")
    touch(root / "c.mp4")
    (root / "out.mp4").symlink_to(outside / "secret.mp4")
    (root / "in.mp4").symlink_to(root / "real" / "a.mp4")
    (root / "c.txt").symlink_to(outside / "secret.txt")
    (root / "elsewhere").symlink_to(outside / "more")
    (root / "real" / "loop").symlink_to(root)
    items = {i.source: i for i in discover(root)}
    assert {s: i.reject_reason for s, i in items.items()} == {
        "c.mp4": "path_outside_root", "in.mp4": None, "out.mp4": "path_outside_root", "real/a.mp4": None}
    assert items["c.mp4"].caption is None and items["out.mp4"].size is None

    manifest = root / "m.jsonl"
    rows = ["out.mp4", "elsewhere/v.mp4", "in.mp4", "real/loop/real/a.mp4"]
    manifest.write_text("\n".join(json.dumps({"path": p}) for p in rows))
    assert [i.reject_reason for i in discover(manifest)] == ["path_outside_root", "path_outside_root", None, None]


def test_hidden_videos_get_a_row_other_hidden_files_none(tmp_path):
    for name in (".x.mp4", ".cache/d.MOV", ".cache/notes.txt", ".y.txt", "sub/.z.webm", "ok.mp4",
                 ".vidlayer/journal.mp4", "out/.vidlayer/tmp.mp4"):
        touch(tmp_path / name)
    items = {i.source: i for i in discover(tmp_path)}
    assert sorted(items) == [".cache/d.MOV", ".x.mp4", "ok.mp4", "sub/.z.webm"]
    hidden = [i for i in items.values() if i.reject_reason == "hidden_file"]
    assert len(hidden) == 3 and hidden[0].reject_message == "hidden files are not read; rename it to include it"


def test_size_is_recorded_from_one_stat(tmp_path):
    touch(tmp_path / "a.mp4", b"12345")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "missing.mp4")
    assert {i.source: i.size for i in discover(tmp_path)} == {"a.mp4": 5, "gone.mp4": None}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.mp4"}\n{"path": "missing.mp4"}\n')
    assert [i.size for i in discover(manifest)] == [5, None]
