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
])
def test_build_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    result = run("build", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


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
