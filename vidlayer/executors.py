"""Running the stages over inputs: in this process, or on Ray.

The unit of work is a `Task`: one input and the clips cut from it so far. A `StageChain`
runs consecutive stages over a few tasks (a model stage batches their clips into one forward
pass); on Ray, stages with the same GPU needs are fused into one chain per actor (frames cross
process boundaries only where resources change, e.g. between CPU stages and a GPU model), and
each chain becomes a Ray Data actor pool, which gives streaming back-pressure between them:
`workers` actors for CPU chains, and for GPU chains as many as the cluster's GPUs hold (on a
cluster without GPUs, the model stages run on CPU actors). Stage errors never escape a chain: a
clip that raises becomes a failed outcome. A worker process that dies (segfault, out of memory)
loses the tasks it held; the Ray executor notices the missing inputs and retries them once
before giving up on them as failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vidlayer.clip import Captions, Clip, Drop, InputItem, Outcome, Status
from vidlayer.config import Pipeline, StageSpec
from vidlayer.stages.base import Resources

log = logging.getLogger(__name__)


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


class ChainWorker:
    """A Ray Data actor: one StageChain, fed a batch of pickled tasks at a time."""

    def __init__(self, specs: list[StageSpec], final: bool):
        self.chain = StageChain(specs, final)

    def __call__(self, batch: dict) -> dict:
        tasks = self.chain([pickle.loads(blob) for blob in batch["task"]])
        return {"task": [pickle.dumps(task) for task in tasks]}


class RayExecutor:
    """Runs the stage groups as Ray Data actor pools on a local Ray or an existing cluster."""

    def __init__(self, pipeline: Pipeline, workers: int, address: str | None = None, attempts: int = 2):
        import ray

        self.workers = workers
        self.attempts = attempts
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            # Ray's C++ core logs routine notices as errors on the console; its log files keep them.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            if address:
                ray.init(address=address, **options)
            else:
                # A local Ray gets room for every requested worker, even beyond the core count.
                needed = max(s.resources.cpus for s in pipeline.stages) * workers
                ray.init(num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)), **options)
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
        import ray.data

        # Lost blocks are the driver's business (it retries them), not console errors.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.max_errored_blocks = -1  # a dead worker loses its block, not the whole build

    def pool_size(self, group: list[StageSpec]) -> int:
        """CPU chains get `workers` actors each; GPU chains one per set of GPU shares the cluster holds."""
        return self.gpu_sets if group_resources(group).gpus else self.workers

    def run(self, tasks: Iterable[Task]) -> Iterator[Task]:
        pending = {t.item.key: t for t in tasks}
        for attempt in range(1, self.attempts + 1):
            if not pending:
                return
            for task in self._run_once(list(pending.values())):
                pending.pop(task.item.key, None)
                yield task
            if pending:
                log.warning("%d input(s) were lost with a worker (attempt %d of %d)", len(pending), attempt, self.attempts)
        for task in pending.values():
            message = f"the worker process died {self.attempts} times while processing it (crash or out of memory)"
            task.outcomes.append(Outcome(task.item.key, Status.FAILED, "worker", "worker_lost", message))
            task.clips = []
            yield task

    def _run_once(self, tasks: list[Task]) -> Iterator[Task]:
        import ray.data

        ds = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
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
                    fn_constructor_kwargs={"specs": group, "final": i == len(self.groups) - 1},
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
