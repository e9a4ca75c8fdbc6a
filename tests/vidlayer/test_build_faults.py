"""Faults a long build meets, survived: a node of the cluster lost, the driver killed or
terminated, a worker that hangs, the output folder deleted under the build.

The clip work is bench/scale_stages.py's `emit` stage (no video), so each build takes seconds
and every fault can land while inputs are in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from vidlayer.build import BuildError, Part, build
from vidlayer.io.manifest import Journal, read_manifest
from vidlayer.io.shards import read_shard

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from scale_stages import emit_pipeline  # noqa: E402


@pytest.fixture(autouse=True)
def emit_on_workers(monkeypatch):
    """Ray workers (and driver subprocesses) import the `emit` stage by name."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]))


def input_manifest(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "inputs.jsonl"
    path.write_text("".join(json.dumps({"path": f"videos/{i:03d}.mp4", "key": f"clip-{i:03d}",
                                        "caption": "a dog runs on a beach"}) + "\n" for i in range(n)))
    return path


def committed_inputs(out: Path) -> int:
    journal = out / ".vidlayer" / "journal.jsonl"
    return journal.read_bytes().count(b'"kind":"input"') if journal.exists() else 0


def wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("the build did not get there in time")
        time.sleep(0.05)


def assert_each_input_once_and_shards_whole(out: Path, n: int, manifest: str = "manifest.parquet") -> list[dict]:
    """Every input has exactly one row; the written samples are exactly what the shards hold."""
    rows = read_manifest(out / manifest)
    inputs = [r for r in rows if r["kind"] == "input"]
    assert sorted(r["key"] for r in inputs) == [f"clip-{i:03d}" for i in range(n)]
    written = sorted(r["key"] for r in rows if r["kind"] == "sample" and r["status"] == "written")
    in_shards = sorted(s["__key__"] for shard in sorted((out / "shards").rglob("*.tar")) for s in read_shard(shard))
    assert in_shards == written
    assert not list((out / "shards").rglob("*.part"))
    return inputs


def driver(manifest: Path, out: Path, extra: str = "", **emit) -> subprocess.Popen:
    """A build in its own process (the driver), to kill or signal."""
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r})\n"
            "from rich.console import Console\nfrom scale_stages import emit_pipeline\nfrom vidlayer.build import build\n"
            f"build({str(manifest)!r}, {str(out)!r}, emit_pipeline(**{emit!r}), console=Console(stderr=True){extra})\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of a head without CPUs and three one-CPU worker nodes, all on this machine."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    cluster.shutdown()


def test_a_node_lost_mid_build_loses_and_repeats_nothing(cluster, tmp_path):
    ray_cluster, nodes = cluster
    n = 40
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"

    def remove_a_node() -> None:
        wait_for(lambda: committed_inputs(out) >= 6)
        ray_cluster.remove_node(nodes[-1])

    remover = threading.Thread(target=remove_a_node, daemon=True)
    remover.start()
    summary = build(manifest, out, emit_pipeline(seconds=0.4, written=0.5, failed=0.0), workers=3,
                    ray_address=ray_cluster.address, stall_timeout=120)
    remover.join(timeout=1)
    assert not remover.is_alive(), "the node was not removed while the build ran"
    inputs = assert_each_input_once_and_shards_whole(out, n)
    assert all(r["status"] != "failed" for r in inputs), "an input lost with the node was not redone"
    assert summary.inputs["written"] + summary.inputs["dropped"] == n


def test_a_driver_killed_on_a_cluster_resumes_exactly(cluster, tmp_path):
    ray_cluster, _ = cluster
    n = 30
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"
    emit = dict(seconds=0.3, written=0.5, failed=0.0, payload_bytes=64)
    first = driver(manifest, out, f", workers=2, ray_address={ray_cluster.address!r}", **emit)
    wait_for(lambda: committed_inputs(out) >= 5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 5 <= committed_inputs(out) < n
    summary = build(manifest, out, emit_pipeline(**emit), workers=2, ray_address=ray_cluster.address)
    assert summary.resumed >= 5
    assert_each_input_once_and_shards_whole(out, n)


def test_a_hung_worker_is_given_up_after_the_stall_timeout_and_the_rest_is_kept(tmp_path):
    n = 12
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"
    pipeline = emit_pipeline(seconds=0.05, written=1.0, failed=0.0, hang_key="clip-003")
    pipeline.output.shard_max_samples = 100  # every sample would sit in the one open shard
    summary = build(manifest, out, pipeline, workers=2, stall_timeout=5)
    inputs = {r["key"]: r for r in assert_each_input_once_and_shards_whole(out, n)}
    assert (inputs["clip-003"]["status"], inputs["clip-003"]["reason"]) == ("failed", "timeout")
    # What the hung worker held is given up (Ray Data may have handed it one more); the rest is written.
    assert all(r["reason"] == "timeout" for r in inputs.values() if r["status"] != "written")
    assert summary.inputs["written"] >= n - 2
    assert not stopped_ray_workers(), "the hung worker outlived the build"


def stopped_ray_workers() -> list[int]:
    stopped = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if state == "T" and b"ray::" in command:
            stopped.append(int(stat.parent.name))
    return stopped


def test_sigterm_commits_the_open_shard_as_ctrl_c_does(tmp_path):
    n = 200
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"
    process = driver(manifest, out, ", executor='inline'", seconds=0.05, written=1.0, failed=0.0)
    wait_for(lambda: any(p.stat().st_size > 10_000 for p in (out / "shards").glob("*.part")))
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    # 64 samples per shard: the signal came before the first shard was full, and it was committed.
    inputs = [r for r in read_manifest(out / "manifest.parquet") if r["kind"] == "input"]
    assert 0 < len(inputs) < 64
    assert len(list(read_shard(out / "shards" / "shard-000000.tar"))) == len(inputs)
    assert not list((out / "shards").glob("*.part"))


def test_a_build_whose_folder_is_deleted_stops_and_the_new_build_owns_it(tmp_path):
    n = 12
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"
    emit = dict(seconds=0.3, written=0.5, failed=0.0)
    first = driver(manifest, out, ", executor='inline'", **emit)
    wait_for(lambda: committed_inputs(out) >= 1)
    shutil.rmtree(out)
    build(manifest, out, emit_pipeline(**emit), executor="inline")
    _, stderr = first.communicate(timeout=60)
    assert first.returncode != 0 and "was deleted or replaced while this build ran" in stderr
    assert_each_input_once_and_shards_whole(out, n)
    _, commits = Journal(out / ".vidlayer" / "journal.jsonl").read()
    keys = [r["key"] for c in commits for r in c.rows if r["kind"] == "input"]
    assert len(keys) == len(set(keys)) == n


def test_parts_share_a_folder_without_clashes_and_each_input_lands_once(tmp_path):
    n = 30
    manifest, out = input_manifest(tmp_path, n), tmp_path / "out"
    pipeline = emit_pipeline(written=0.5, failed=0.0)
    pipeline.output.shard_max_samples = 2
    for index in (1, 2, 3):
        build(manifest, out, pipeline, executor="inline", part=Part(index, 3))
    rows = [r for m in sorted(out.glob("manifest-part-*.parquet")) for r in read_manifest(m)]
    assert sorted(r["key"] for r in rows if r["kind"] == "input") == [f"clip-{i:03d}" for i in range(n)]
    written = {r["key"]: r["shard"] for r in rows if r["kind"] == "sample" and r["status"] == "written"}
    # Each part numbers its shards from 0 in its own folder: the same file names, no clash.
    assert {Path(shard).parent.name for shard in written.values()} == {f"part-00{i}-of-003" for i in (1, 2, 3)}
    assert {Path(shard).name for shard in written.values()} >= {"shard-000000.tar", "shard-000001.tar"}
    for key, shard in written.items():
        assert key in {s["__key__"] for s in read_shard(out / shard)}
    # A part resumes anywhere: moved to another place (machine), it finds its work done.
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    again = build(manifest, moved, pipeline, executor="inline", part=Part(2, 3))
    assert again.processed_now == 0 and again.resumed == sum(1 for r in rows if r["kind"] == "input"
                                                             and Part(2, 3).holds(r["key"]))
    with pytest.raises(BuildError, match="built in 3 parts"):
        build(manifest, out, pipeline, executor="inline")
    with pytest.raises(BuildError, match="built in 3 parts"):
        build(manifest, out, pipeline, executor="inline", part=Part(1, 2))
