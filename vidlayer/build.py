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
import hashlib
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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
from vidlayer.executors import DEFAULT_STALL_TIMEOUT, InlineExecutor, RayExecutor, Task, start_task
from vidlayer.io.inputs import VIDEO_SUFFIXES, discover
from vidlayer.io.manifest import Journal, rows_for, write_parquet
from vidlayer.io.shards import ShardSink, finish_or_discard_parts, shard_index, stamp_sample

STATE_DIR = ".vidlayer"
SHARDS_DIR = "shards"
GROUP_COMMIT_ROWS = 2000
GROUP_COMMIT_SECONDS = 1.0
MAX_PARTS = 10_000


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
    startup_seconds: float = 0.0  # journal replay, discovery and the skip of finished inputs
    first_result_seconds: float = 0.0  # until the first input finished (includes starting Ray and the workers)
    manifest_seconds: float = 0.0  # writing manifest.parquet at the end
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


@dataclass(frozen=True)
class Part:
    """One of `count` drivers sharing a build: it takes the inputs whose key hashes to `index`.

    Each part has its own journal, lock, shard folder and manifest in the output folder, named
    after the part rather than the machine, so parts can run at once on several machines, and any
    of them resume anywhere, without a name clash.
    """

    index: int  # 1 .. count
    count: int

    @classmethod
    def parse(cls, text: str) -> Part:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match.group(1)) <= int(match.group(2)) <= MAX_PARTS:
            raise BuildError(f"--part {text!r}: give I/N with 1 <= I <= N <= {MAX_PARTS}, e.g. 3/8")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        return f"part-{self.index:03d}-of-{self.count:03d}"

    def holds(self, key: str) -> bool:
        return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % self.count == self.index - 1


class OutputFolder:
    """Owns an output folder (or one part of it) for the duration of a build: lock, journal, shards, manifest."""

    def __init__(self, path: Path, pipeline: Pipeline, part: Part | None = None):
        self.path = path
        self.pipeline = pipeline
        self.part = part
        self.state = path / STATE_DIR / part.name if part else path / STATE_DIR
        self.shards = path / SHARDS_DIR / part.name if part else path / SHARDS_DIR
        self.manifest = path / (f"manifest-{part.name}.parquet" if part else "manifest.parquet")
        self.journal = Journal(self.state / "journal.jsonl")
        self._lock_file = None
        self.rows: list[dict[str, Any]] = []
        self.committed_shards: list[str] = []
        self.manifest_seconds = 0.0
        self._waiting: list[dict[str, Any]] = []  # rows committed but not yet in the journal
        self._waiting_since = 0.0

    def __enter__(self) -> OutputFolder:
        if self.path.is_symlink() and not self.path.exists():
            raise BuildError(f"--output {self.path} is a link to nothing; give a folder")
        if self.path.exists() and not self.path.is_dir():
            raise BuildError(f"--output {self.path} is a file, not a folder")
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            self.shards.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BuildError(f"cannot create the output folder {self.path}: {e.strerror or e}") from None
        self._check_parts()
        self._lock()
        header, commits = self.journal.read()
        config = self.pipeline.to_dict()
        if header is None:
            self.journal.write_header({"pipeline": self.pipeline.name, "config_hash": self.pipeline.config_hash(),
                                       "config": config, "vidlayer_version": vidlayer.__version__,
                                       "created": time.time()})
            (self.path / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        elif header["config_hash"] != self.pipeline.config_hash():
            changed = config_differences(header.get("config"), config)
            raise BuildError(
                f"{self.path} was built with pipeline '{header['pipeline']}' (config {header['config_hash']}); this "
                f"run's config is {self.pipeline.config_hash()}"
                + (f" ({'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''})" if changed else "")
                + ". Use a new --output, or the same pipeline and --set values."
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
        try:
            if self._still_ours():  # never write into a folder that another build now owns
                self.flush()
                began = time.perf_counter()
                write_parquet(self.rows, self.manifest)
                self.manifest_seconds = time.perf_counter() - began
        finally:
            if self._lock_file is not None:
                self._lock_file.close()

    def _check_parts(self) -> None:
        """A folder is built whole or in parts of one count, never both: they would share inputs."""
        root = self.path / STATE_DIR
        counts = {int(p.name.rsplit("-", 1)[1]) for p in root.glob("part-*-of-*") if (p / "journal.jsonl").exists()}
        whole = (root / "journal.jsonl").exists()
        if self.part and whole:
            raise BuildError(f"{self.path} holds a build that was not split into parts; build it without --part")
        if self.part and counts - {self.part.count}:
            raise BuildError(f"{self.path} is being built in {sorted(counts)[0]} parts; use --part I/{sorted(counts)[0]}")
        if not self.part and counts:
            raise BuildError(f"{self.path} is being built in {sorted(counts)[0]} parts; give --part I/{sorted(counts)[0]}")

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

    def _still_ours(self) -> bool:
        """Whether the lock file on disk is still the one this build holds: deleting the folder under a
        running build (and starting another in it) must not let two builds write one folder."""
        if self._lock_file is None:
            return False
        try:
            on_disk = os.stat(self.state / "lock")
        except OSError:
            return False
        held = os.fstat(self._lock_file.fileno())
        return (on_disk.st_ino, on_disk.st_dev) == (held.st_ino, held.st_dev)

    def _journal_commit(self, rows: list[dict[str, Any]], shard: str | None = None) -> None:
        if not self._still_ours():
            raise BuildError(f"{self.path} was deleted or replaced while this build ran; it stopped so that two "
                             "builds do not write one folder")
        self.journal.commit(rows, shard)

    @property
    def done_inputs(self) -> dict[str, dict[str, Any]]:
        """The input rows already committed, by input key."""
        return {r["input_key"]: r for r in self.rows if r["kind"] == "input"}

    def shard_path(self, shard_name: str) -> str:
        """A shard's path relative to the output folder, as the manifest records it."""
        return (self.shards / shard_name).relative_to(self.path).as_posix()

    def commit(self, rows: list[dict[str, Any]], shard: str | None = None) -> None:
        """Make rows durable. Rows without a shard wait (at most GROUP_COMMIT_ROWS of them, or
        GROUP_COMMIT_SECONDS) to share one journal write and fsync: a crash loses only inputs that
        wrote nothing, and those are simply redone. A shard's rows are written at once, with them."""
        self.rows.extend(rows)
        if shard is None:
            if not self._waiting:
                self._waiting_since = time.monotonic()
            self._waiting.extend(rows)
            if len(self._waiting) < GROUP_COMMIT_ROWS and time.monotonic() - self._waiting_since < GROUP_COMMIT_SECONDS:
                return
        self._journal_commit(self._waiting + (rows if shard else []), shard)
        self._waiting = []
        if shard:
            self.committed_shards.append(Path(shard).name)

    def flush(self) -> None:
        """Write the rows still waiting for a group commit."""
        if self._waiting:
            self._journal_commit(self._waiting)
            self._waiting = []

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
    part: Part | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> BuildSummary:
    """Run `pipeline` over every input (of `part`, when given) not yet finished in `output`.

    SIGTERM stops the build as Ctrl-C does: the open shard's finished samples are committed first.
    """
    console = console or Console(stderr=True)
    started = time.perf_counter()
    items = discover(input_path, input_root)
    if not items:
        raise BuildError(f"--input {input_path} holds no videos ({', '.join(VIDEO_SUFFIXES)}) and lists none")
    if part:
        items = [item for item in items if part.holds(item.key)]
    output = Path(output)
    summary = BuildSummary(output=output)
    with OutputFolder(output, pipeline, part) as folder, _sigterm_interrupts():
        done = folder.done_inputs
        _refuse_other_files(items, done, output)
        todo = [item for item in items if item.key not in done]
        summary.resumed = len(items) - len(todo)
        name, config_hash = pipeline.name, pipeline.config_hash()
        pending: dict[str, list[dict[str, Any]]] = {}

        def commit_shard(shard_name: str) -> None:
            folder.commit(pending.pop(shard_name, []), folder.shard_path(shard_name))

        sink = ShardSink(folder.shards, folder.next_shard_index(), pipeline.output.shard_max_samples,
                         pipeline.output.shard_max_bytes, commit_shard)
        meter = StageMeter([spec.stage for spec in pipeline.stages])
        summary.startup_seconds = time.perf_counter() - started
        with _progress(console, len(items), summary.resumed, meter) as progress:
            counts = Counter(r["status"] for r in done.values())
            progress.update_counts(counts)
            try:
                for task in _finished_tasks(todo, pipeline, workers, executor, ray_address, meter.pools, stall_timeout):
                    meter.add(task)
                    rows = rows_for(task.item, task.outcomes, name, config_hash)
                    samples = [stamp_sample(o.clip.sample, name, config_hash)
                               for o in task.outcomes if o.status is Status.WRITTEN]
                    if samples:
                        shard = sink.write_group(samples)
                        for row in rows:
                            if row["kind"] == "sample" and row["status"] == Status.WRITTEN.value:
                                row["shard"] = folder.shard_path(shard)
                        pending.setdefault(shard, []).extend(rows)
                    else:
                        folder.commit(rows)
                    counts[rows[-1]["status"]] += 1
                    summary.processed_now += 1
                    if summary.processed_now == 1:
                        summary.first_result_seconds = time.perf_counter() - started
                    progress.advance_one(counts)
            finally:
                # Samples already in the open shard are complete, so closing commits them.
                sink.close()
        _summarise(summary, folder)
    summary.manifest_seconds = folder.manifest_seconds
    summary.stage_rates = meter.rates()
    summary.seconds = time.perf_counter() - started
    return summary


def config_differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The settings that differ between two resolved pipelines, as `stage.param: old -> new`."""
    if not old:
        return []

    def flat(config: dict[str, Any]) -> dict[str, Any]:
        values = {f"{section}.{k}": v for section in ("input", "output") for k, v in config.get(section, {}).items()}
        for stage in config.get("stages", []):
            values[f"{stage['stage']}.backend"] = stage["backend"]
            values.update({f"{stage['stage']}.{k}": v for k, v in stage.get("params", {}).items()})
        return values

    before, after = flat(old), flat(new)
    return [f"{key}: {before.get(key, '(none)')} -> {after.get(key, '(none)')}"
            for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]


def _refuse_other_files(items: list[InputItem], done: dict[str, dict[str, Any]], output: Path) -> None:
    """Inputs are matched to finished ones by key (their path under the input root); one whose file
    has another size than when it was built is another video, and must not be skipped as done."""
    changed = [(item, done[item.key]["bytes"]) for item in items
               if item.key in done and item.size is not None and done[item.key].get("bytes") not in (None, item.size)]
    if changed:
        item, before = changed[0]
        raise BuildError(f"{len(changed)} input(s) have the names of inputs {output} already holds but are other "
                         f"files (e.g. {item.source}: {before} bytes then, {item.size} now); build them into a new "
                         "--output")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a build runs, SIGTERM raises KeyboardInterrupt, so that it ends as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _finished_tasks(items: list[InputItem], pipeline: Pipeline, workers: int, executor: str,
                    ray_address: str | None, pools: dict[str, int], stall_timeout: float) -> Iterator[Task]:
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
            runner = RayExecutor(pipeline, workers, ray_address, stall_timeout=stall_timeout)
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
