"""Orchestration at scale: a build of up to 200K inputs with the clip work taken out.

Each size runs the real build path (an input manifest, discovery, Ray Data actor pools, the
journal, the shard sink, manifest.parquet) with `scale_stages.emit` in place of the pipeline,
in a child process that is killed with SIGKILL once half of the inputs are committed, then
resumed to the end. Reported per size: inputs per second through the driver (before the kill
and after the resume), the driver's peak memory, the journal's size, the resume's start-up
(journal replay, discovery and the skip of finished inputs, until the first input is handed
to the executor) and the time to write manifest.parquet; then how each grows with the size.

    python bench/bench_scale.py [--sizes 10000 50000 200000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "scale"
TARGETS = {"inputs_per_s": 200.0, "driver_peak_mb": 2048.0, "resume_startup_s": 10.0}


def write_input_manifest(n: int, path: Path) -> None:
    """`n` inputs listed in a JSONL manifest (the videos need not exist: `emit` never opens them)."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"path": f"videos/{i // 1000:04d}/{i:07d}.mp4", "key": f"clip-{i:07d}",
                                "caption": f"a person walks a dog along a beach, clip {i}"}) + "\n")


def child(manifest: Path, output: Path, workers: int, address: str | None = None, seconds: float = 0.0) -> None:
    """The driver under test: one build, its figures as JSON on stdout."""
    sys.path.insert(0, str(HERE))
    from scale_stages import emit_pipeline

    from vidlayer.build import build

    summary = build(manifest, output, emit_pipeline(seconds=seconds), workers=workers, executor="ray",
                    ray_address=address, console=Console(file=open(os.devnull, "w")))
    print(json.dumps({
        "processed_now": summary.processed_now, "resumed": summary.resumed, "seconds": summary.seconds,
        "startup_seconds": summary.startup_seconds,
        "first_result_seconds": summary.first_result_seconds, "manifest_seconds": summary.manifest_seconds,
        "inputs": dict(summary.inputs), "shards": len(summary.shards),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def committed_inputs(journal: Path, state: dict) -> int:
    """Input rows committed so far, reading only what the journal gained since the last call."""
    if not journal.exists():
        return 0
    with open(journal, "rb") as f:
        f.seek(state.get("offset", 0))
        data = f.read()
    state["offset"] = state.get("offset", 0) + len(data)
    state["count"] = state.get("count", 0) + data.count(b'"kind":"input"')
    return state["count"]


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(n: int, workers: int) -> dict:
    folder = OUT / f"n{n}"
    subprocess.run(["rm", "-rf", "--", str(folder)], check=True)
    folder.mkdir(parents=True)
    manifest, output = folder / "inputs.jsonl", folder / "build"
    write_input_manifest(n, manifest)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(manifest), str(output), str(workers)]

    started = time.perf_counter()
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    journal, state = output / ".vidlayer" / "journal.jsonl", {}
    first_input_at = None
    while committed_inputs(journal, state) < n // 2:
        if first.poll() is not None:
            raise RuntimeError(f"the build of {n} inputs ended before half of them were committed")
        if first_input_at is None and state.get("count"):
            first_input_at = time.perf_counter()
        time.sleep(0.2)
    killed_at = time.perf_counter()
    first_peak = peak_mb(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = committed_inputs(journal, state)

    resumed = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if resumed.returncode:
        raise RuntimeError(f"the resumed build of {n} inputs failed:\n{resumed.stderr[-2000:]}")
    second = json.loads(resumed.stdout.strip().splitlines()[-1])
    total = sum(second["inputs"].values())
    if total != n:
        raise RuntimeError(f"{n} inputs, {total} input rows in the manifest")
    # Sustained: from the first finished input (Ray and its workers started) to the last.
    work = second["seconds"] - second["first_result_seconds"] - second["manifest_seconds"]
    return {
        "inputs": n,
        "rate_first": done_before / (killed_at - (first_input_at or started)),
        "rate_resumed": (second["processed_now"] - 1) / work,
        "driver_peak_mb": max(first_peak, second["peak_mb"]),
        "journal_mb": journal.stat().st_size / 1e6,
        "resume_startup_s": second["startup_seconds"],
        "manifest_s": second["manifest_seconds"],
        "shards": second["shards"],
        "written": second["inputs"].get("written", 0),
        "resumed_inputs": second["resumed"],
    }


def cluster_faults(n: int) -> dict:
    """A build on a local Ray cluster (a head without CPUs, three one-CPU nodes) that loses a node at
    30% of its inputs and its driver at 60%, then resumes: every input must end with exactly one
    row, and the shards must hold exactly the written samples."""
    from ray.cluster_utils import Cluster

    from vidlayer.io.manifest import read_manifest
    from vidlayer.io.shards import read_shard

    folder = OUT / f"cluster-n{n}"
    subprocess.run(["rm", "-rf", "--", str(folder)], check=True)
    folder.mkdir(parents=True)
    manifest, output = folder / "inputs.jsonl", folder / "build"
    write_input_manifest(n, manifest)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(manifest), str(output), "3",
                   cluster.address, "0.002"]
        started = time.perf_counter()
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal, state = output / ".vidlayer" / "journal.jsonl", {}
        for share, fault in ((0.3, "node"), (0.6, "driver")):
            while committed_inputs(journal, state) < share * n:
                if driver.poll() is not None:
                    raise RuntimeError(f"the cluster build ended before the {fault} fault")
                time.sleep(0.1)
            if fault == "node":
                cluster.remove_node(nodes[-1])
            else:
                driver.send_signal(signal.SIGKILL)
                driver.wait()
        before_resume = committed_inputs(journal, state)
        resumed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if resumed.returncode:
            raise RuntimeError(f"the resumed cluster build failed:\n{resumed.stderr[-2000:]}")
        seconds = time.perf_counter() - started
    finally:
        cluster.shutdown()
    rows = read_manifest(output / "manifest.parquet")
    inputs = [r["key"] for r in rows if r["kind"] == "input"]
    written = sorted(r["key"] for r in rows if r["kind"] == "sample" and r["status"] == "written")
    in_shards = sorted(s["__key__"] for shard in sorted((output / "shards").glob("*.tar")) for s in read_shard(shard))
    return {
        "inputs": n, "seconds": seconds, "committed_before_resume": before_resume,
        "every_input_once": sorted(inputs) == sorted({f"clip-{i:07d}" for i in range(n)}),
        "shards_hold_exactly_the_written_samples": in_shards == written,
        "torn_shards": len(list((output / "shards").glob("*.part"))),
        "worker_lost": sum(1 for r in rows if r["kind"] == "input" and r["reason"] == "worker_lost"),
    }


def growth(results: list[dict], figure: str) -> str:
    """Cost per input at the largest size over cost per input at the smallest: 1 is linear."""
    small, large = results[0], results[-1]
    if figure.startswith("rate"):
        return f"{small[figure] / large[figure]:.2f}"
    return f"{(large[figure] / large['inputs']) / (small[figure] / small['inputs']):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster-inputs", type=int, default=5000,
                        help="inputs of the fault run on a local three-node Ray cluster (0: skip it)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        manifest, output, workers, *cluster = args.child
        child(Path(manifest), Path(output), int(workers), *([cluster[0], float(cluster[1])] if cluster else []))
        return
    console = Console()
    results = []
    for n in args.sizes:
        console.print(f"[bold]{n:,} inputs[/] ...")
        results.append(measure(n, args.workers))
        console.print(results[-1])
    columns = [("inputs/s before the kill", "rate_first", "inputs_per_s"),
               ("inputs/s after the resume", "rate_resumed", "inputs_per_s"),
               ("driver peak MB", "driver_peak_mb", "driver_peak_mb"),
               ("journal MB", "journal_mb", None), ("resume start-up s", "resume_startup_s", "resume_startup_s"),
               ("manifest write s", "manifest_s", None)]
    table = Table(title=f"build orchestration, {args.workers} workers, emit stage (no clip work)")
    table.add_column("figure")
    for r in results:
        table.add_column(f"{r['inputs']:,}", justify="right")
    table.add_column("target")
    table.add_column("per-input growth", justify="right")
    for label, figure, target in columns:
        bound = TARGETS.get(target) if target else None
        table.add_row(label, *[f"{r[figure]:,.1f}" if r[figure] >= 10 else f"{r[figure]:.2f}" for r in results],
                      ("≥ " if figure.startswith("rate") else "< ") + f"{bound:g}" if bound else "",
                      growth(results, figure) if len(results) > 1 else "")
    console.print(table)
    console.print("per-input growth: cost per input at the largest size over the smallest (1.00 is linear)")
    report = {"scale": results}
    if args.cluster_inputs:
        console.print(f"[bold]{args.cluster_inputs:,} inputs on a three-node cluster[/]: a node removed at 30%, "
                      "the driver killed at 60%, then resumed ...")
        report["cluster_faults"] = cluster_faults(args.cluster_inputs)
        console.print(report["cluster_faults"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
