"""End-to-end builds on `vidlayer synth` clips: shards, manifest, Ray, resume, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds

from vidlayer.build import BuildError, OutputFolder, build
from vidlayer.config import load_pipeline
from vidlayer.io.manifest import read_manifest
from vidlayer.io.video import decode_video, encode_video
from vidlayer.layers import composite


def written_keys(out: Path) -> list[str]:
    return sorted(s["__key__"] for shard in sorted((out / "shards").glob("*.tar"))
                  for s in wds.WebDataset(str(shard), shardshuffle=False))


def test_every_input_is_accounted_for_once(raw, inline_build):
    out, summary = inline_build
    rows = read_manifest(out / "manifest.parquet")
    inputs = [r for r in rows if r["kind"] == "input"]
    assert sorted(r["source"] for r in inputs) == sorted(p.name for p in raw.glob("*.mp4"))
    assert summary.inputs["written"] >= 2, [(r["reason"], r["message"]) for r in inputs]
    assert sum(summary.inputs.values()) == 3
    for row in rows:
        assert row["status"] in ("written", "dropped", "failed")
        assert (row["status"] == "written") == (row["reason"] is None)


def test_samples_read_back_with_webdataset_and_recomposite(inline_build):
    out, _ = inline_build
    rows = {r["key"]: r for r in read_manifest(out / "manifest.parquet") if r["kind"] == "sample"}
    samples = [s for shard in sorted((out / "shards").glob("*.tar")) for s in wds.WebDataset(str(shard), shardshuffle=False)]
    assert samples and len(samples) == sum(r["status"] == "written" for r in rows.values())
    for sample in samples:
        meta = json.loads(sample["json"])
        row = rows[sample["__key__"]]
        assert row["shard"] and (out / row["shard"]).exists() and meta["config_hash"] == row["config_hash"]
        layers = meta["layers"]
        full = decode_video(sample[layers["full"]])
        background = decode_video(sample[layers["background"]])
        foregrounds = np.stack([decode_video(sample[n]) for n in layers["foreground"]])
        alphas = np.stack([decode_video(sample[n], grey=True) for n in layers["alpha"]]).astype(np.float32) / 255
        assert full.shape == (17, 240, 432, 3) == background.shape and meta["frames"] == 17
        assert foregrounds.shape[:2] == alphas.shape[:2] == (meta["num_foregrounds"], 17)
        # After lossy H.264 the layers still add back up to the full video.
        error = np.abs(composite(foregrounds, alphas, background) - full).mean() / 255
        assert error < 0.02, sample["__key__"]
        assert meta["captions"]["full"] and len(meta["captions"]["foreground"]) == meta["num_foregrounds"]


def test_ray_with_two_workers_builds_the_same_samples(raw, inline_build, tmp_path, small):
    out, _ = inline_build
    summary = build(raw, tmp_path / "ray", load_pipeline("default", small), workers=2, executor="ray")
    assert summary.inputs == inline_build[1].inputs
    assert written_keys(tmp_path / "ray") == written_keys(out)


def test_rerunning_a_finished_build_does_nothing(raw, inline_build, small):
    out, _ = inline_build
    before = written_keys(out)
    summary = build(raw, out, load_pipeline("default", small), executor="inline")
    assert summary.processed_now == 0 and summary.resumed == 3
    assert written_keys(out) == before


def test_resume_after_a_kill_loses_and_repeats_nothing(raw, inline_build, tmp_path, small):
    """SIGKILL a build after its first shard commit; the re-run completes it exactly."""
    many = tmp_path / "raw"
    many.mkdir()
    for copy in range(3):  # nine inputs: enough that the kill lands mid-run
        for clip in raw.iterdir():
            shutil.copy(clip, many / f"c{copy}-{clip.name}")
    out = tmp_path / "out"
    overrides = [*small, "output.shard_max_samples=1"]
    command = [sys.executable, "-m", "vidlayer.cli", "build", "--input", str(many), "--output", str(out),
               "--executor", "inline", *[a for o in overrides for a in ("--set", o)]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".vidlayer" / "journal.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (journal.exists() and b'"shard":"shards/' in journal.read_bytes()):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (out / "manifest.parquet").exists()

    summary = build(many, out, load_pipeline("default", overrides), executor="inline")
    assert 0 < summary.resumed < 9
    keys = written_keys(out)
    assert len(keys) == len(set(keys)), "a sample was written twice"
    rows = read_manifest(out / "manifest.parquet")
    inputs = [r for r in rows if r["kind"] == "input"]
    assert len(inputs) == len({r["input_key"] for r in inputs}) == 9
    assert sorted(r["key"] for r in rows if r["kind"] == "sample" and r["status"] == "written") == keys
    # Exactly what an uninterrupted build of the same clips writes.
    clean = {r["source"] for r in read_manifest(inline_build[0] / "manifest.parquet")
             if r["kind"] == "input" and r["status"] == "written"}
    assert {r["source"] for r in inputs if r["status"] == "written"} == {f"c{i}-{s}" for i in range(3) for s in clean}
    assert not list((out / "shards").glob("*.part"))


def test_a_folder_in_use_is_refused(raw, tmp_path, small):
    pipeline = load_pipeline("default", small)
    with OutputFolder(tmp_path / "out", pipeline):
        with pytest.raises(BuildError, match="in use by another build"):
            build(raw, tmp_path / "out", pipeline, executor="inline")


def test_resuming_with_another_pipeline_is_refused_naming_the_setting(raw, inline_build, small):
    with pytest.raises(BuildError, match=r"was built with pipeline .*\(window\.fps: 16\.0 -> 12\.0\)"):
        build(raw, inline_build[0], load_pipeline("default", [*small, "window.fps=12"]), executor="inline")


def test_other_videos_with_the_names_of_finished_inputs_are_refused_not_skipped(raw, inline_build, tmp_path, small):
    other = tmp_path / "other"
    shutil.copytree(raw, other)
    video = sorted(other.glob("*.mp4"))[0]
    video.write_bytes(video.read_bytes() + b"\0" * 100)  # another file under the same name
    with pytest.raises(BuildError, match=rf"1 input\(s\) have the names of inputs .* \(e\.g\. {video.name}: \d+ bytes then"):
        build(other, inline_build[0], load_pipeline("default", small), executor="inline")


def test_an_output_that_is_not_a_folder_and_an_empty_input_are_refused_clearly(raw, tmp_path, small):
    pipeline = load_pipeline("default", small)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="is a file, not a folder"):
        build(raw, tmp_path / "file", pipeline, executor="inline")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BuildError, match="is a link to nothing"):
        build(raw, tmp_path / "dangling", pipeline, executor="inline")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="holds no videos"):
        build(tmp_path / "empty", tmp_path / "out", pipeline, executor="inline")


def bad_input_corpus(folder: Path, good: Path) -> dict[str, str | None]:
    """Each broken input and the reason its manifest row must give (None: must get past decoding)."""
    folder.mkdir()
    data = good.read_bytes()
    cases: dict[str, str | None] = {}

    def add(name: str, content: bytes | None, reason: str | None, caption: bytes = b"a thing moving over a place"):
        if content is not None:
            (folder / name).write_bytes(content)
        (folder / name).with_suffix(".txt").write_bytes(caption)
        cases[name] = reason

    add("empty.mp4", b"", "empty_file")
    add("truncated.mp4", data[: len(data) // 3], "not_a_video")  # the index (moov) sits at the end: cut off
    add("text.mp4", b"definitely not a video\n" * 50, "not_a_video")
    add("one_frame.mp4", encode_video(np.full((1, 64, 64, 3), 90, np.uint8), 16), "too_few_frames")
    add("huge.mp4", encode_video(np.zeros((20, 64, 5000, 3), np.uint8), 16), "resolution_out_of_bounds")
    add("latin1.mp4", data, "caption_not_utf8", caption="caf\xe9 au lait".encode("latin-1"))
    add("nocaption.mp4", data, "missing_caption")
    (folder / "nocaption.txt").unlink()
    (folder / "dangling.mp4").symlink_to(folder / "does-not-exist.mp4")
    add("dangling.mp4", None, "file_not_found")
    # An AV1 stream: decord cannot read it, PyAV can, so it must get past decoding.
    frames = decode_video(data)
    with av.open(str(folder / "av1.mkv"), "w") as container:
        stream = container.add_stream("libsvtav1", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    add("av1.mkv", None, None)
    return cases


def test_bad_inputs_each_get_a_row_and_the_build_goes_on(raw, tmp_path, small):
    good = sorted(raw.glob("*.mp4"))[0]
    cases = bad_input_corpus(tmp_path / "bad", good)
    shutil.copy(good, tmp_path / "bad" / "good.mp4")
    shutil.copy(good.with_suffix(".json") if good.with_suffix(".json").exists() else good.with_suffix(".txt"),
                tmp_path / "bad" / ("good" + (".json" if good.with_suffix(".json").exists() else ".txt")))
    summary = build(tmp_path / "bad", tmp_path / "out", load_pipeline("default", small), executor="inline")
    rows = {r["source"]: r for r in read_manifest(tmp_path / "out" / "manifest.parquet") if r["kind"] == "input"}
    assert sorted(rows) == sorted([*cases, "good.mp4"])
    for name, reason in cases.items():
        if reason is None:
            assert rows[name]["stage"] not in ("input", "decode"), rows[name]
        else:
            assert (rows[name]["status"], rows[name]["reason"]) == ("dropped", reason), rows[name]
            assert rows[name]["message"]
    assert rows["good.mp4"]["status"] == "written"
    assert summary.inputs["failed"] == 0


def write_crashing_backend(folder: Path) -> None:
    """A segment backend whose worker process dies on one particular input, as a segfault would."""
    (folder / "crashing_backend.py").write_text(
        "import os\n"
        "from vidlayer.stages.base import Stage, register\n"
        "from vidlayer.stages.segment import MotionSegmenter\n\n"
        "@register\n"
        "class Crashing(MotionSegmenter):\n"
        "    backend = 'crashing'\n\n"
        "    def process(self, clip):\n"
        "        if clip.source.startswith('poison'):\n"
        "            os._exit(11)\n"
        "        return super().process(clip)\n"
    )


def test_a_worker_crash_fails_only_its_input(raw, tmp_path, monkeypatch, small):
    write_crashing_backend(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    import crashing_backend  # noqa: F401  (registers the backend here and, by PYTHONPATH, on the workers)

    inputs = tmp_path / "raw"
    shutil.copytree(raw, inputs)
    first = sorted(inputs.glob("*.mp4"))[0]
    for sidecar in [first, first.with_suffix(".json"), first.with_suffix(".txt")]:
        if sidecar.exists():
            sidecar.rename(inputs / f"poison{sidecar.suffix}")
    pipeline = load_pipeline("default", [*small, "segment.backend=crashing"])
    summary = build(inputs, tmp_path / "out", pipeline, workers=2, executor="ray")
    rows = {r["source"]: r for r in read_manifest(tmp_path / "out" / "manifest.parquet") if r["kind"] == "input"}
    assert (rows["poison.mp4"]["status"], rows["poison.mp4"]["reason"]) == ("failed", "worker_lost")
    assert all(r["status"] != "failed" for name, r in rows.items() if name != "poison.mp4")
    assert summary.inputs["failed"] == 1 and len(rows) == 3


def test_rows_without_a_shard_wait_for_a_group_commit_and_a_shards_rows_do_not(tmp_path, small, monkeypatch):
    """Inputs that wrote nothing share one journal write (and fsync); a shard's rows go at once."""
    import vidlayer.build as build_module

    monkeypatch.setattr(build_module, "GROUP_COMMIT_SECONDS", 3600.0)
    monkeypatch.setattr(build_module, "GROUP_COMMIT_ROWS", 3)

    def row(key: str) -> dict:
        return {"kind": "input", "input_key": key, "key": key, "status": "dropped"}

    with OutputFolder(tmp_path / "out", load_pipeline("default", small)) as folder:
        journaled = lambda: [r["key"] for c in folder.journal.read()[1] for r in c.rows]  # noqa: E731
        folder.commit([row("a")])
        folder.commit([row("b")])
        assert journaled() == [] and set(folder.done_inputs) == {"a", "b"}
        folder.commit([row("c")])
        assert journaled() == ["a", "b", "c"]
        folder.commit([row("d")])
        folder.commit([row("e")], "shards/shard-000000.tar")
        assert journaled() == ["a", "b", "c", "d", "e"]
        folder.commit([row("f")])
    assert journaled() == ["a", "b", "c", "d", "e", "f"], "closing the folder flushes what waits"
