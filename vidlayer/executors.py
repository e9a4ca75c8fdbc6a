"""Running the stages over inputs: in this process, or on Ray.

The unit of work is a `Task`: one input and the clips cut from it so far. A `StageChain`
runs consecutive stages over a few tasks (a model stage batches their clips into one forward
pass); on Ray, stages with the same GPU needs are fused into one chain per actor (frames cross
process boundaries only where resources change, e.g. between CPU stages and a GPU model), and
each chain becomes a Ray Data actor pool, which gives streaming back-pressure between them:
`workers` actors for CPU chains, and for GPU chains as many as the cluster's GPUs hold (on a
cluster without GPUs, the model stages run on CPU actors). Stage errors never escape a chain: a
clip that raises becomes a failed outcome. A worker process that dies (segfault, out of memory,
its node lost) loses the tasks it held; the Ray executor notices the missing inputs and retries
them once before giving up on them as failed. A worker that hangs (stopped, deadlocked) is met by
the stall timeout: when no input finishes for that long, the inputs still out are failed with
reason `timeout`, so that the build ends and commits what it has.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from queue import Empty, Queue

from vidlayer.clip import Captions, Clip, Drop, InputItem, Outcome, Status
from vidlayer.config import Pipeline, StageSpec
from vidlayer.stages.base import Resources

log = logging.getLogger(__name__)

MAX_BLOCK_ROWS = 256
BLOCKS_PER_ACTOR = 16
DEFAULT_STALL_TIMEOUT = 1800.0  # seconds without any finished input before the inputs still out are given up
STARTUP_ALLOWANCE = 600.0  # seconds the first finished input may take at least
WIND_DOWN_SECONDS = 60.0  # after killing hung workers, how long the run may take to end


@dataclass
class Task:
    item: InputItem
    clips: list[Clip] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def start_task(item: InputItem, require_caption: bool) -> Task:
    """The task for an input; one rejected before any video is opened is already finished."""
    if item.reject_reason:
        return Task(item, outcomes=[Outcome(item.key, Status.DROPPED, "input", item.reject_reason, item.reject_message)])
    if require_caption and not item.caption:
        message = "no caption: add NAME.txt or NAME.json beside the video, or a caption column to the manifest"
        return Task(item, outcomes=[Outcome(item.key, Status.DROPPED, "input", "missing_caption", message)])
    captions = Captions(full=item.caption or "", foreground=list(item.fg_captions), background=item.bg_caption)
    clip = Clip(key=item.key, input_key=item.key, path=item.path, source=item.source, captions=captions)
    return Task(item, clips=[clip])


class StageChain:
    """Consecutive stages, set up once per worker, applied to a few tasks at a time.

    Each stage sees the clips of all the tasks at once, in batches of its `batch_size`, so that a
    model stage runs several clips through one forward pass.
    """

    def __init__(self, specs: list[StageSpec], final: bool):
        limit_threads(max(1, int(group_resources(specs).cpus)))
        self.stages = [spec.build() for spec in specs]
        self.final = final
        self.batch_size = group_batch_size(specs)
        for stage in self.stages:
            stage.setup()

    def __call__(self, tasks: list[Task]) -> list[Task]:
        for stage in self.stages:
            pending = [(task, clip) for task in tasks for clip in task.clips]
            for task in tasks:
                task.clips = []
            for start in range(0, len(pending), stage.batch_size):
                batch = pending[start:start + stage.batch_size]
                began = time.perf_counter()
                try:
                    results = stage.process_batch([clip for _, clip in batch])
                except Exception as error:  # the batch as a whole (e.g. the forward pass) failed
                    results = [error] * len(batch)
                share = (time.perf_counter() - began) / len(batch)
                for (task, clip), result in zip(batch, results):
                    task.clips.extend(self._settle(stage.stage, task, clip, result, share))
        if self.final:
            for task in tasks:
                task.outcomes.extend(Outcome(c.key, Status.WRITTEN, clip=c) for c in task.clips)
                task.clips = []
        return tasks

    @staticmethod
    def _settle(stage: str, task: Task, clip: Clip, result: Clip | list[Clip] | Exception, seconds: float) -> list[Clip]:
        """The clips that go on; a dropped or failed clip becomes an outcome of its task instead."""
        if isinstance(result, Exception):
            clip.timings[stage] = seconds
            if isinstance(result, Drop):
                task.outcomes.append(Outcome(clip.key, Status.DROPPED, stage, result.reason, result.message,
                                             clip=_light(clip)))
            else:  # a bug or an unforeseen input: record it, keep the build going
                where = traceback.extract_tb(result.__traceback__)[-1] if result.__traceback__ else None
                at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
                task.outcomes.append(Outcome(clip.key, Status.FAILED, stage, "error",
                                             f"{type(result).__name__}: {result}{at}", clip=_light(clip)))
            return []
        clips = result if isinstance(result, list) else [result]
        for c in clips:
            c.timings[stage] = c.timings.get(stage, 0.0) + seconds / len(clips)
        return clips


def limit_threads(threads: int) -> None:
    """Keep each worker to its share of cores: N workers should not each start a thread per core."""
    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:  # model-backed stages import torch; the weights-free ones need not pay for it
        sys.modules["torch"].set_num_threads(threads)


def _light(clip: Clip) -> Clip:
    """The clip without its arrays: an outcome only needs captions, metrics and timings."""
    clip.proxy = clip.frames = clip.masks = clip.motion = clip.alphas = clip.background = clip.foregrounds = None
    return clip


def stage_groups(specs: list[StageSpec]) -> list[list[StageSpec]]:
    """Consecutive stages with equal GPU needs share a worker; CPU-only stages fuse together."""
    groups: list[list[StageSpec]] = []
    for spec in specs:
        if groups and groups[-1][-1].resources.gpus == spec.resources.gpus:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return groups


def on_cpu(specs: list[StageSpec]) -> list[StageSpec]:
    """The stages with their GPU requests dropped: on a cluster without GPUs the model stages run on CPUs."""
    if any(s.resources.gpus for s in specs):
        log.warning("the Ray cluster has no GPU: model stages run on CPUs (slowly)")
    return [dataclasses.replace(s, resources=dataclasses.replace(s.resources, gpus=0.0)) for s in specs]


def group_batch_size(group: list[StageSpec]) -> int:
    """Tasks a chain takes per call: enough for its most batched stage."""
    return max(spec.build().batch_size for spec in group)


def group_resources(group: list[StageSpec]) -> Resources:
    return Resources(cpus=max(s.resources.cpus for s in group), gpus=max(s.resources.gpus for s in group))


class InlineExecutor:
    """Runs everything in this process, a batch of inputs at a time: for debugging and small jobs."""

    def __init__(self, pipeline: Pipeline):
        self.chain = StageChain(pipeline.stages, final=True)
        self.pool_sizes = {spec.stage: 1 for spec in pipeline.stages}

    def run(self, tasks: Iterable[Task]) -> Iterator[Task]:
        tasks = list(tasks)
        for start in range(0, len(tasks), self.chain.batch_size):
            yield from self.chain(tasks[start:start + self.chain.batch_size])

    def close(self) -> None:
        pass


class _Stalled(Exception):
    """Nothing came out of the workers for longer than the stall timeout."""


class _Results:
    """The results of one Ray Data run, pulled by a helper thread so that waiting for the next one
    can time out."""

    def __init__(self, results: Iterator[Task]):
        self.queue: Queue = Queue(maxsize=64)
        threading.Thread(target=self._pull, args=(results,), daemon=True, name="ray-data-results").start()

    def _pull(self, results: Iterator[Task]) -> None:
        try:
            for result in results:
                self.queue.put(result)
        except BaseException as error:  # handed to the consumer, which raises it
            self.queue.put(error)
        self.queue.put(None)

    def next(self, timeout: float) -> Task | None:
        """The next finished task, or None at the end; raises _Stalled after `timeout` seconds."""
        try:
            result = self.queue.get(timeout=timeout)
        except Empty:
            raise _Stalled from None
        if isinstance(result, BaseException):
            raise result
        return result


class WorkerRegistry:
    """A Ray actor that holds the handles of the chain workers, so that hung ones can be killed."""

    def __init__(self) -> None:
        self.workers: list = []

    def add(self, worker: Any) -> None:
        self.workers.append(worker)

    def all(self) -> list:
        return self.workers


class ChainWorker:
    """A Ray Data actor: one StageChain, fed a batch of pickled tasks at a time."""

    def __init__(self, specs: list[StageSpec], final: bool, registry: str | None = None):
        self.chain = StageChain(specs, final)
        if registry:
            import ray

            ray.get_actor(registry).add.remote(ray.get_runtime_context().current_actor)

    def __call__(self, batch: dict) -> dict:
        tasks = self.chain([pickle.loads(blob) for blob in batch["task"]])
        return {"task": [pickle.dumps(task) for task in tasks]}


class RayExecutor:
    """Runs the stage groups as Ray Data actor pools on a local Ray or an existing cluster."""

    def __init__(self, pipeline: Pipeline, workers: int, address: str | None = None, attempts: int = 2,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT):
        import ray

        self.workers = workers
        self.attempts = attempts
        self.stall_timeout = stall_timeout
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            # Ray's C++ core logs routine notices as errors on the console; its log files keep them.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            if address:
                ray.init(address=address, **options)
            else:
                # A local Ray gets room for every requested worker, even beyond the core count. "local":
                # a new one, even where another Ray runs on this machine (ray.init would join that).
                needed = max(s.resources.cpus for s in pipeline.stages) * workers
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)), **options)
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        self.groups = stage_groups(on_cpu(pipeline.stages) if gpus == 0 else pipeline.stages)
        # Every GPU chain gets the same number of actors, as many sets as the cluster's GPUs hold.
        per_set = sum(group_resources(g).gpus for g in self.groups)
        if per_set > gpus + 1e-6:
            self.close()
            raise ValueError(f"the GPU stages need {per_set:g} GPUs for one worker each, the Ray cluster has {gpus:g}; "
                             "lower their resources.gpus (fractions share a GPU)")
        self.gpu_sets = max(1, int(gpus / per_set + 1e-6)) if per_set else 0
        self.pool_sizes = {spec.stage: self.pool_size(group) for group in self.groups for spec in group}
        self.registry_name = f"vidlayer-workers-{uuid.uuid4().hex[:12]}"
        self.registry = ray.remote(num_cpus=0)(WorkerRegistry).options(name=self.registry_name).remote()
        import ray.data

        # Lost blocks are the driver's business (it retries them), not console errors.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.max_errored_blocks = -1  # a dead worker loses its block, not the whole build

    def pool_size(self, group: list[StageSpec]) -> int:
        """CPU chains get `workers` actors each; GPU chains one per set of GPU shares the cluster holds."""
        return self.gpu_sets if group_resources(group).gpus else self.workers

    def block_rows(self, tasks: int) -> int:
        """Inputs per Ray Data block. A block is the unit of scheduling and of loss: a worker that dies
        loses its block (a retry runs one input per block). One input per block balances a
        small build best, but each block costs the driver scheduling work, so a large build gets
        bigger blocks, while every actor still has BLOCKS_PER_ACTOR of them to draw from."""
        return max(1, min(MAX_BLOCK_ROWS, tasks // (self.workers * BLOCKS_PER_ACTOR)))

    def run(self, tasks: Iterable[Task]) -> Iterator[Task]:
        pending = {t.item.key: t for t in tasks}
        for attempt in range(1, self.attempts + 1):
            if not pending:
                return
            tasks = list(pending.values())
            results = _Results(self._run_once(tasks, self.block_rows(len(tasks)) if attempt == 1 else 1))
            try:
                wait = max(self.stall_timeout, STARTUP_ALLOWANCE)  # the first result: workers start, models load
                while (task := results.next(wait)) is not None:
                    wait = self.stall_timeout
                    pending.pop(task.item.key, None)
                    yield task
            except _Stalled:
                # A hung worker (stopped, deadlocked) holds its inputs and its slot. Killing the workers
                # turns what they held into lost blocks, and the run winds down; those inputs are given
                # up, so that the build ends and commits what it has.
                self._kill_workers()
                try:
                    while (task := results.next(WIND_DOWN_SECONDS)) is not None:
                        pending.pop(task.item.key, None)
                        yield task
                except _Stalled:
                    log.warning("Ray Data did not wind down after its workers were killed")
                message = (f"no input finished for {self.stall_timeout:g} s while this one was out "
                           "(a worker hung); raise --stall-timeout if clips take that long")
                yield from self._give_up(pending.values(), "timeout", message)
                return
            if pending:
                log.warning("%d input(s) were lost with a worker (attempt %d of %d)", len(pending), attempt, self.attempts)
        message = f"the worker process died {self.attempts} times while processing it (crash or out of memory)"
        yield from self._give_up(pending.values(), "worker_lost", message)

    def _kill_workers(self) -> None:
        import ray

        for worker in ray.get(self.registry.all.remote(), timeout=WIND_DOWN_SECONDS):
            ray.kill(worker, no_restart=True)

    @staticmethod
    def _give_up(tasks: Iterable[Task], reason: str, message: str) -> Iterator[Task]:
        for task in tasks:
            task.outcomes.append(Outcome(task.item.key, Status.FAILED, "worker", reason, message))
            task.clips = []
            yield task

    def _run_once(self, tasks: list[Task], block_rows: int) -> Iterator[Task]:
        import ray.data

        ds = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks],
                                 override_num_blocks=-(-len(tasks) // block_rows))
        for i, group in enumerate(self.groups):
            resources = group_resources(group)
            actors = min(self.pool_size(group), len(tasks))
            # A batch holds at most an actor's share of the inputs, so that one actor does not take them all.
            batch_size = min(group_batch_size(group), -(-len(tasks) // actors))
            with warnings.catch_warnings():
                # Ray Data has no named parameter for max_task_retries yet (pyproject pins ray < 2.64).
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(
                    ChainWorker,
                    fn_constructor_kwargs={"specs": group, "final": i == len(self.groups) - 1,
                                           "registry": self.registry_name},
                    batch_size=batch_size,
                    # One batch per actor at a time: queued behind a busy actor, a batch would wait
                    # while another actor of the pool sits idle (a 4-clip build ran on one of two).
                    compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                    num_cpus=resources.cpus,
                    num_gpus=resources.gpus,
                    # A task that killed its worker is not retried there (Ray Data's default is
                    # forever): the driver retries lost inputs a bounded number of times instead.
                    max_task_retries=0,
                )
        for row in ds.iter_rows():
            yield pickle.loads(row["task"])

    def close(self) -> None:
        import ray

        if self.started_ray:
            ray.shutdown()
