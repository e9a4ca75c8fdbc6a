"""`vidlayer inspect` on shards as they come: large, odd or crafted."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from vidlayer.inspector import describe, list_samples, load_sample, render_sample, samples_table
from vidlayer.io.shards import SampleError
from vidlayer.io.video import encode_video

LAYERS = {"full": "full.mp4", "background": "bg.mp4", "foreground": ["fg.mp4"], "alpha": ["alpha.mp4"]}


def write_tar(path, members):
    """A tar of (name, bytes) members, in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def layered(key, meta=None, frames=3):
    """The members of a small layered sample, with `meta` merged into its metadata."""
    colour = encode_video(np.full((frames, 16, 16, 3), 90, np.uint8), 8.0, preset="ultrafast")
    matte = encode_video(np.full((frames, 16, 16), 200, np.uint8), 8.0, lossless=True, preset="ultrafast")
    metadata = {"frames": frames, "width": 16, "height": 16, "fps": 8.0, "num_foregrounds": 1, "layers": LAYERS,
                "captions": {"full": "a scene", "foreground": ["a cat"], "background": "a room"}, **(meta or {})}
    videos = {"full.mp4": colour, "bg.mp4": colour, "fg.mp4": colour, "alpha.mp4": matte}
    return [(f"{key}.json", json.dumps(metadata).encode()), *((f"{key}.{n}", v) for n, v in videos.items())]


def test_listing_holds_the_first_samples_and_reads_no_video(tmp_path):
    # Past the limit even the metadata is broken: listing must not read it, only count the samples.
    members = [(f"s{i:04d}.json", b'{"frames": 17}' if i < 5 else b"not json") for i in range(1000)]
    members += [(f"s{i:04d}.full.mp4", b"v" * 100) for i in range(1000)]
    shard = write_tar(tmp_path / "shard.tar", sorted(members))
    listing = list_samples(shard, limit=5)
    assert (len(listing.samples), listing.total, listing.hidden) == (5, 1000, 995)
    assert listing.samples[0] == {"__key__": "s0000", "json": {"frames": 17}, "full.mp4": 100}
    assert describe(listing.samples[0]) == {"key": "s0000", "members": {"full.mp4": 100}, "frames": 17}


def test_a_sample_past_the_listing_is_found_and_read_whole(tmp_path):
    shard = write_tar(tmp_path / "shard.tar", [m for i in range(3) for m in layered(f"k{i}")])
    assert [s["__key__"] for s in list_samples(shard, limit=1).samples] == ["k0"]
    sample = load_sample(shard, "k2")
    assert sample["__key__"] == "k2" and isinstance(sample["full.mp4"], bytes) and sample["json"]["frames"] == 3
    with pytest.raises(KeyError, match="no sample 'k9'"):
        load_sample(shard, "k9")


def test_render_draws_every_layer(tmp_path):
    shard = write_tar(tmp_path / "shard.tar", layered("k0"))
    path = render_sample(load_sample(shard, "k0"), tmp_path / "sheet.png", columns=3)
    assert Image.open(path).size[1] > 4 * 16


@pytest.mark.parametrize("layers, message", [
    ({**LAYERS, "full": "__key__"}, "not a member extension"),
    ({**LAYERS, "alpha": ["__url__"]}, "not a member extension"),
    ("full.mp4", "names no layers"),
    ({**LAYERS, "foreground": ["fg.mp4", "fg.mp4"]}, "one alpha per foreground"),
])
def test_render_follows_only_layer_names_that_are_members(tmp_path, monkeypatch, layers, message):
    # The key is also the path of a video here: decoding a layer named `__key__` would open it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_bytes(layered("x")[1][1])
    shard = write_tar(tmp_path / "shard.tar", layered("secret", {"layers": layers}))
    with pytest.raises(SampleError, match=message):
        render_sample(load_sample(shard, "secret"), tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_render_names_layers_that_do_not_decode_or_align(tmp_path):
    broken = [(n, b"junk" if n.endswith("fg.mp4") else v) for n, v in layered("k0")]
    with pytest.raises(SampleError, match="layer fg0 does not decode"):
        render_sample(load_sample(write_tar(tmp_path / "a.tar", broken), "k0"), tmp_path / "a.png")
    short = dict(layered("k1", frames=2))
    uneven = [(n, short["k1.bg.mp4"] if n.endswith("bg.mp4") else v) for n, v in layered("k1")]
    with pytest.raises(SampleError, match="differ in frames or size"):
        render_sample(load_sample(write_tar(tmp_path / "b.tar", uneven), "k1"), tmp_path / "b.png")


def test_table_shows_fields_of_the_wrong_type_as_question_marks():
    odd = {"__key__": "odd\x1b[31m", "json": {
        "frames": "many", "fps": None, "width": [1], "height": 10**400, "num_foregrounds": True,
        "captions": {"full": 5, "foreground": "a cat", "background": ["x"]}, "captions_derived": "yes",
        "metrics": {"quality_confidence": "high", "quality_composite_error": 10**400, "quality_alpha_coverage": 0.5}}}
    markup = {"__key__": "markup", "json": {"captions": {"full": "[/] [bold red]loud", "foreground": ["[/x]"]},
                                           "metrics": [1, 2]}}
    not_a_dict = {"__key__": "plain", "json": {"captions": "a scene"}}
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(samples_table([odd, markup, not_a_dict], title="[/] shard"))
    shown = console.file.getvalue()
    assert "odd?[31m" in shown and "\x1b" not in shown
    assert "? x ?x? @ ? fps" in shown and "? foreground layer(s)" in shown
    assert "exp. J    ?" in shown and "comp. err ?" in shown and "coverage  0.500" in shown
    assert "[/] [bold red]loud" in shown and "[/x]" in shown and "[/] shard" in shown
