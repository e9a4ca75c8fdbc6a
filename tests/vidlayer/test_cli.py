"""The `vidlayer` command as a user meets it: exit codes, one-line errors, outputs."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vidlayer.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args, message", [
    (["--input", "/no/such/folder", "--output", "o"], "does not exist"),
    (["--input", ".", "--output", "o", "--pipeline", "no-such-pipeline"], "pipeline file not found"),
    (["--input", ".", "--output", "o", "--set", "window.num_frames"], "stage.param=value"),
    (["--input", ".", "--output", "o", "--set", "window.colour=1"], "unknown settings"),
    (["--input", ".", "--output", "o", "--workers", "0"], "at least 1"),
    (["--input", ".", "--output", "o", "--part", "4/3"], "give I/N with 1 <= I <= N"),
    (["--input", ".", "--output", "o", "--part", "x"], "give I/N"),
    (["--input", ".", "--output", "o", "--shard-size", "1XB"], "give a positive number with a unit"),
    (["--input", ".", "--output", "o", "--shard-size", "0GB"], "give a positive number with a unit"),
    (["--input", ".", "--output", "o", "--stall-timeout", "0"], "--stall-timeout must be positive"),
])
def test_build_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    result = run("build", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


@pytest.mark.parametrize("text, size", [("1GB", 10**9), ("500 MB", 5 * 10**8), ("2GiB", 2 * 2**30),
                                        ("1.5gb", 1_500_000_000), ("123456", 123456)])
def test_shard_sizes_read_as_people_write_them(text, size):
    from vidlayer.cli import parse_size

    assert parse_size(text) == size


def test_shard_options_set_the_pipelines_output_limits(raw, tmp_path, small):
    args = [a for o in small for a in ("--set", o)]
    result = run("build", "--input", raw, "--output", tmp_path / "out", "--executor", "inline", *args,
                 "--shard-size", "2MB", "--shard-samples", "1")
    assert result.exit_code == 0, result.output
    written = (tmp_path / "out" / "pipeline.yaml").read_text()
    assert "shard_max_bytes: 2000000" in written and "shard_max_samples: 1" in written


def test_build_prints_a_summary(raw, tmp_path, small):
    args = [a for o in small for a in ("--set", o)]
    result = run("build", "--input", raw, "--output", tmp_path / "out", "--executor", "inline", *args)
    assert result.exit_code == 0, result.output
    assert "inputs" in result.output and "manifest.parquet" in result.output
    assert (tmp_path / "out" / "manifest.parquet").exists()


def test_synth_writes_clips_and_ground_truth(tmp_path):
    result = run("synth", tmp_path / "s", "--n", 2, "--width", 96, "--height", 64, "--seconds", 0.5)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "raw").glob("*.mp4"))) == 2 and len(list((tmp_path / "s" / "gt").iterdir())) == 2
    assert run("synth", tmp_path / "t", "--width", 95).exit_code == 2


def test_synth_hard_writes_the_mode_into_each_clip(tmp_path):
    result = run("synth", tmp_path / "s", "--n", 4, "--seed", 3, "--hard", "--width", 96, "--height", 64,
                 "--seconds", 0.5)
    assert result.exit_code == 0, result.output
    modes = {path.name: json.loads((path / "layers.json").read_text())["hard"]
             for path in (tmp_path / "s" / "gt").iterdir()}
    assert modes == {"synth-hard-0003-0000": "tracking", "synth-hard-0003-0001": "parallax",
                     "synth-hard-0003-0002": "static", "synth-hard-0003-0003": "late"}
    assert run("synth", tmp_path / "t", "--toy", "--hard").exit_code == 2


def first_shard(inline_build):
    return sorted((inline_build[0] / "shards").glob("*.tar"))[0]


def test_inspect_table_and_json(inline_build):
    shard = first_shard(inline_build)
    table = run("inspect", shard)
    assert table.exit_code == 0 and "samples)" in table.output
    listing = json.loads(run("inspect", shard, "--json").output)
    assert listing and all(s["frames"] == 17 and s["members"]["full.mp4"] > 0 for s in listing)
    assert listing[0]["key"] in table.output


def test_inspect_renders_a_contact_sheet(inline_build, tmp_path):
    shard = first_shard(inline_build)
    key = json.loads(run("inspect", shard, "--json").output)[0]
    result = run("inspect", shard, "--sample", key["key"], "--render", tmp_path / "sheet.png", "--columns", 5)
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    rows = 2 + 2 * key["num_foregrounds"]  # full, background, then foreground and alpha per layer
    assert sheet.shape[0] > rows * 100 and sheet.shape[1] > 5 * 200
    assert sheet.std() > 20  # pictures, not a blank canvas
    assert run("inspect", shard, "--sample", "no-such-key").exit_code == 2


def test_inspect_refuses_members_that_escape(tmp_path):
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../../etc/evil.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    result = run("inspect", tmp_path / "evil.tar")
    assert result.exit_code == 2 and "escape" in result.output
    assert run("inspect", tmp_path / "missing.tar").exit_code == 2


def tar_of(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def written(path, data):
    path.write_bytes(data)
    return path


def declaring(path, name, size):
    """A tar of a few KB whose one member declares `size` bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    return written(path, info.tobuf() + b"\0" * 4096)


@pytest.mark.parametrize("make, message", [
    (lambda p: tar_of(p / "s.tar", [("k.json", b"[1, 2]")]), "must be a JSON object"),
    (lambda p: tar_of(p / "s.tar", [("k.json", b"3")]), "must be a JSON object"),
    (lambda p: tar_of(p / "s.tar", [("k.json", b"[" * 100_000 + b"]" * 100_000)]), "RecursionError"),
    (lambda p: tar_of(p / "s.tar", [("http://host/k.json", b"{}")]), "name a URL"),
    (lambda p: declaring(p / "s.tar", "clip.json", 2 * 2**30), "refused before reading"),
    (lambda p: p, "is a folder"),
    (lambda p: p / "missing.tar", "does not exist"),
    (lambda p: written(p / "notes.tar", b"not a tar"), "cannot read"),
])
def test_inspect_refuses_what_it_cannot_read_in_one_line(tmp_path, make, message):
    result = run("inspect", make(tmp_path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_inspect_shows_odd_metadata_as_it_is(tmp_path):
    odd = {"frames": "many", "fps": None, "layers": "full.mp4", "captions": {"full": 5, "foreground": "[/]"},
           "metrics": {"quality_confidence": "high"}}
    shard = tar_of(tmp_path / "s.tar", [("odd.json", json.dumps(odd).encode()),
                                        ("plain.json", b'{"captions": "[bold]x", "metrics": [1]}')])
    result = run("inspect", shard)
    assert result.exit_code == 0, result.output
    assert "? x ?x? @ ? fps" in result.output and "exp. J    ?" in result.output and "[bold]x" not in result.output
    assert [s["key"] for s in json.loads(run("inspect", shard, "--json").output)] == ["odd", "plain"]
    result = run("inspect", shard, "--render", tmp_path / "sheet.png")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: cannot render 'odd'")
    assert "names no layers" in result.output and not (tmp_path / "sheet.png").exists()


def test_inspect_render_refuses_layers_that_do_not_decode(tmp_path):
    layers = {"full": "full.mp4", "background": "bg.mp4", "foreground": ["fg.mp4"], "alpha": ["alpha.mp4"]}
    shard = tar_of(tmp_path / "s.tar", [("k.json", json.dumps({"layers": layers}).encode()),
                                        *((f"k.{name}", b"junk") for name in ("full.mp4", "bg.mp4", "fg.mp4",
                                                                              "alpha.mp4"))])
    result = run("inspect", shard, "--sample", "k", "--render", tmp_path / "sheet.png")
    assert result.exit_code == 2 and "layer full does not decode" in result.output
    assert "Traceback" not in result.output


def test_inspect_lists_without_reading_the_videos(tmp_path):
    # A file system sparse file: 2 GiB of declared video in a few KB on disk.
    meta = tarfile.TarInfo("clip.json")
    meta.size = 2
    video = tarfile.TarInfo("clip.full.mp4")
    video.size = 2 * 2**30
    with open(tmp_path / "s.tar", "wb") as f:
        f.write(meta.tobuf() + b"{}".ljust(512, b"\0") + video.tobuf())
        f.seek(video.size, io.SEEK_CUR)
        f.write(b"\0" * 1024)  # the end-of-archive blocks
    listed = run("inspect", tmp_path / "s.tar", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["members"] == {"full.mp4": 2 * 2**30}
    result = run("inspect", tmp_path / "s.tar", "--render", tmp_path / "sheet.png")
    assert result.exit_code == 2 and "refused before reading" in result.output


def test_inspect_lists_a_limited_number_of_samples(tmp_path):
    shard = tar_of(tmp_path / "s.tar", [(f"s{i:03d}.json", b"{}") for i in range(120)])
    result = run("inspect", shard)
    assert result.exit_code == 0 and "(120 samples)" in result.output and "70 more not shown" in result.output
    assert "s049" in result.output and "s050" not in result.output
    listed = runner.invoke(app, ["inspect", str(shard), "--json", "--limit", "5"])
    assert len(json.loads(listed.stdout)) == 5 and "115 more not shown" in listed.stderr
    assert run("inspect", shard, "--limit", 0).exit_code == 2


def test_stages_lists_every_backend_of_the_default_pipeline():
    result = run("stages")
    for backend in ("motion", "guided", "propagate", "unmix", "webdataset"):
        assert backend in result.output


def test_eval_prints_scores_and_writes_json_and_a_report(inline_build, raw, tmp_path):
    out, _ = inline_build
    result = run("eval", "--pred", out, "--gt", raw.parent, "--json", tmp_path / "eval.json",
                 "--report", tmp_path / "report.html")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert len(saved["rows"]) == 3 and 0 < saved["summary"]["J_all_clips"] <= 1
    assert f"J {saved['summary']['J_all_clips']:.3f}" in result.output
    assert (tmp_path / "report.html").exists()


def test_eval_refuses_a_folder_that_is_no_build(raw, tmp_path):
    result = run("eval", "--pred", tmp_path, "--gt", raw.parent)
    assert result.exit_code == 2 and "not a build output" in result.output
