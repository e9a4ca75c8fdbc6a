"""`vidlayer build`: inputs in, layered shards and a manifest out, resumable.

The output folder:
    shards/shard-000000.tar ...   WebDataset shards, each renamed into place once committed
    manifest.parquet              every input and every clip with its outcome
    pipeline.yaml                 the resolved pipeline this folder was built with
    .vidlayer/journal.jsonl       the commit log that makes a build resumable
    .vidlayer/lock                held while a build runs, so two builds cannot share a folder

Re-running the same command skips inputs that the journal already has and redoes the rest.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

import vidlayer
from vidlayer.clip import InputItem, Status
from vidlayer.config import Pipeline
from vidlayer.executors import InlineExecutor, RayExecutor, Task, start_task
from vidlayer.io.inputs import discover
from vidlayer.io.manifest import Journal, rows_for, write_parquet
from vidlayer.io.shards import ShardSink, finish_or_discard_parts, shard_index, stamp_sample

STATE_DIR = ".vidlayer"
SHARDS_DIR = "shards"


class BuildError(RuntimeError):
    """The build cannot start or continue; the message says why and what to do."""


@dataclass
class BuildSummary:
    output: Path
    inputs: Counter = field(default_factory=Counter)  # status -> count, this folder in total
    samples: Counter = field(default_factory=Counter)  # status -> count
    reasons: Counter = field(default_factory=Counter)  # drop or failure reason -> count of inputs
    processed_now: int = 0
    resumed: int = 0
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    stage_rates: dict[str, float] = field(default_factory=dict)  # clips per minute each stage's workers manage


class StageMeter:
    """Worker seconds per clip in each stage, and so how many clips per minute its pool of workers
    manages: the smallest rate is the build's bottleneck. Read from the finished clips' timings."""

    def __init__(self, stages: list[str]):
        self.stages = stages
        self.seconds: Counter = Counter()
        self.clips: Counter = Counter()
        self.pools: dict[str, int] = {}

    def add(self, task: Task) -> None:
        for outcome in task.outcomes:
            for stage, spent in (outcome.clip.timings if outcome.clip else {}).items():
                self.seconds[stage] += spent
                self.clips[stage] += 1

    def rates(self) -> dict[str, float]:
        return {stage: 60.0 * self.pools.get(stage, 1) * self.clips[stage] / max(self.seconds[stage], 1e-9)
                for stage in self.stages if self.clips[stage]}

    def line(self) -> str:
        return "  ".join(f"{stage} [bold]{rate:,.0f}[/]/min x{self.pools.get(stage, 1)}"
                         for stage, rate in self.rates().items())


class OutputFolder:
    """Owns an output folder for the duration of a build: lock, journal, shards, manifest."""

    def __init__(self, path: Path, pipeline: Pipeline):
        self.path = path
        self.pipeline = pipeline
        self.state = path / STATE_DIR
        self.shards = path / SHARDS_DIR
        self.journal = Journal(self.state / "journal.jsonl")
        self._lock_file = None
        self.rows: list[dict[str, Any]] = []
        self.committed_shards: list[str] = []

    def __enter__(self) -> OutputFolder:
        self.state.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(exist_ok=True)
        self._lock()
        header, commits = self.journal.read()
        if header is None:
            self.journal.write_header({"pipeline": self.pipeline.name, "config_hash": self.pipeline.config_hash(),
                                       "vidlayer_version": vidlayer.__version__, "created": time.time()})
            (self.path / "pipeline.yaml").write_text(yaml.safe_dump(self.pipeline.to_dict(), sort_keys=False))
        elif header["config_hash"] != self.pipeline.config_hash():
            raise BuildError(
                f"{self.path} was built with pipeline '{header['pipeline']}' (config {header['config_hash']}); this "
                f"run's config is {self.pipeline.config_hash()}. Use a new --output, or the same pipeline and --set values."
            )
        for commit in commits:
            self.rows.extend(commit.rows)
            if commit.shard:
                self.committed_shards.append(Path(commit.shard).name)
        finish_or_discard_parts(self.shards, set(self.committed_shards))
        missing = [s for s in self.committed_shards if not (self.shards / s).exists()]
        if missing:
            raise BuildError(f"{len(missing)} committed shard(s) are missing from {self.shards}, e.g. {missing[0]}; "
                             "the folder was changed by hand. Use a new --output.")
        return self

    def __exit__(self, *exc: Any) -> None:
        write_parquet(self.rows, self.path / "manifest.parquet")
        if self._lock_file is not None:
            self._lock_file.close()

    def _lock(self) -> None:
        lock = open(self.state / "lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise BuildError(f"{self.path} is in use by another build (pid {holder}); wait for it or use another --output")
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    @property
    def done_inputs(self) -> set[str]:
        return {r["input_key"] for r in self.rows if r["kind"] == "input"}

    def commit(self, rows: list[dict[str, Any]], shard: str | None = None) -> None:
        self.journal.commit(rows, shard)
        self.rows.extend(rows)
        if shard:
            self.committed_shards.append(Path(shard).name)

    def next_shard_index(self) -> int:
        return max((shard_index(s) for s in self.committed_shards), default=-1) + 1


def build(
    input_path: str | Path,
    output: str | Path,
    pipeline: Pipeline,
    workers: int = 1,
    executor: str = "ray",
    ray_address: str | None = None,
    input_root: str | Path | None = None,
    console: Console | None = None,
) -> BuildSummary:
    """Run `pipeline` over every input not yet finished in `output`."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    items = discover(input_path, input_root)
    output = Path(output)
    summary = BuildSummary(output=output)
    with OutputFolder(output, pipeline) as folder:
        done = folder.done_inputs
        todo = [item for item in items if item.key not in done]
        summary.resumed = len(items) - len(todo)
        name, config_hash = pipeline.name, pipeline.config_hash()
        pending: dict[str, list[dict[str, Any]]] = {}

        def commit_shard(shard_name: str) -> None:
            folder.commit(pending.pop(shard_name, []), f"{SHARDS_DIR}/{shard_name}")

        sink = ShardSink(folder.shards, folder.next_shard_index(), pipeline.output.shard_max_samples,
                         pipeline.output.shard_max_bytes, commit_shard)
        meter = StageMeter([spec.stage for spec in pipeline.stages])
        with _progress(console, len(items), summary.resumed, meter) as progress:
            counts = Counter(r["status"] for r in folder.rows if r["kind"] == "input")
            progress.update_counts(counts)
            try:
                for task in _finished_tasks(todo, pipeline, workers, executor, ray_address, meter.pools):
                    meter.add(task)
                    rows = rows_for(task.item, task.outcomes, name, config_hash)
                    samples = [stamp_sample(o.clip.sample, name, config_hash)
                               for o in task.outcomes if o.status is Status.WRITTEN]
                    if samples:
                        shard = sink.write_group(samples)
                        for row in rows:
                            if row["kind"] == "sample" and row["status"] == Status.WRITTEN.value:
                                row["shard"] = f"{SHARDS_DIR}/{shard}"
                        pending.setdefault(shard, []).extend(rows)
                    else:
                        folder.commit(rows)
                    counts[rows[-1]["status"]] += 1
                    summary.processed_now += 1
                    progress.advance_one(counts)
            finally:
                # Samples already in the open shard are complete, so closing commits them.
                sink.close()
        _summarise(summary, folder)
    summary.stage_rates = meter.rates()
    summary.seconds = time.perf_counter() - started
    return summary


def _finished_tasks(items: list[InputItem], pipeline: Pipeline, workers: int, executor: str,
                    ray_address: str | None, pools: dict[str, int]) -> Iterator[Task]:
    """Inputs rejected up front finish here; the rest go through the executor, whose workers per
    stage are filled into `pools`."""
    tasks = [start_task(item, pipeline.input.require_caption) for item in items]
    yield from (t for t in tasks if not t.clips)
    runnable = [t for t in tasks if t.clips]
    if not runnable:
        return
    if executor == "inline":
        runner = InlineExecutor(pipeline)
    elif executor == "ray":
        try:
            runner = RayExecutor(pipeline, workers, ray_address)
        except ValueError as e:  # the cluster cannot hold the pipeline's workers
            raise BuildError(str(e)) from None
    else:
        raise BuildError(f"unknown executor {executor!r} (use ray or inline)")
    pools.update(runner.pool_sizes)
    try:
        yield from runner.run(runnable)
    finally:
        runner.close()


def _summarise(summary: BuildSummary, folder: OutputFolder) -> None:
    for row in folder.rows:
        target = summary.inputs if row["kind"] == "input" else summary.samples
        target[row["status"]] += 1
        if row["kind"] == "input" and row["status"] != Status.WRITTEN.value:
            summary.reasons[row["reason"]] += 1
    summary.shards = sorted(folder.committed_shards)


class _BuildProgress:
    def __init__(self, progress: _StageProgress, task_id: int):
        self.progress = progress
        self.task_id = task_id

    def update_counts(self, counts: Counter) -> None:
        self.progress.update(self.task_id, counts=_format_counts(counts))

    def advance_one(self, counts: Counter) -> None:
        self.progress.update(self.task_id, advance=1, counts=_format_counts(counts))


def _format_counts(counts: Counter) -> str:
    return (f"[green]written {counts.get('written', 0)}[/] [yellow]dropped {counts.get('dropped', 0)}[/] "
            f"[red]failed {counts.get('failed', 0)}[/]")


class _StageProgress(Progress):
    """Rich's progress bar with a second line: each stage's throughput (clips/min x workers)."""

    def __init__(self, meter: StageMeter, *columns: Any, **options: Any):
        self.meter = meter  # before Progress.__init__, which renders once
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterator[Any]:
        yield self.make_tasks_table(self.tasks)
        line = self.meter.line()
        if line:
            yield Text.from_markup(f"  stages: {line}")


class _progress:
    """A progress bar over inputs with written/dropped/failed counts, an ETA and stage throughput."""

    def __init__(self, console: Console, total: int, completed: int, meter: StageMeter):
        self.bar = _StageProgress(
            meter, TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TextColumn("inputs"),
            TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console,
        )
        self.total, self.completed = total, completed

    def __enter__(self) -> _BuildProgress:
        self.bar.start()
        task_id = self.bar.add_task("build", total=self.total, completed=self.completed, counts="")
        return _BuildProgress(self.bar, task_id)

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()
