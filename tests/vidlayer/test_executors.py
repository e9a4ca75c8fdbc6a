"""The stage chain's batches and error isolation; how the Ray executor sizes CPU and GPU pools."""

from dataclasses import dataclass

import pytest
import ray

from vidlayer.build import BuildError, StageMeter, build
from vidlayer.clip import Captions, Clip, Drop, InputItem, Outcome, Status
from vidlayer.config import StageSpec, load_pipeline
from vidlayer.executors import RayExecutor, StageChain, Task, on_cpu, stage_groups
from vidlayer.stages.base import Resources, Stage


@dataclass
class BatchParams:
    batch_size: int = 3


class Recording(Stage):
    """Passes clips on, drops or fails them by key, and records the batches it was given."""

    stage, backend, Params = "probe", "recording", BatchParams

    def setup(self) -> None:
        self.batches = []

    def process(self, clip: Clip) -> Clip:
        if clip.key == "drop":
            raise Drop("unwanted", "dropped on purpose")
        if clip.key == "bad":
            raise RuntimeError("boom")
        return clip

    def process_batch(self, clips):
        self.batches.append([c.key for c in clips])
        if any(c.key == "crash" for c in clips):
            raise MemoryError("the whole batch failed")
        return super().process_batch(clips)


def chain_of(batch_size: int) -> StageChain:
    spec = StageSpec("probe", "recording", Recording, BatchParams(batch_size), Resources())
    return StageChain([spec], final=True)


def task_of(*keys: str) -> Task:
    item = InputItem(key=keys[0], path="/nowhere.mp4", source="nowhere.mp4")
    return Task(item, clips=[Clip(key=k, input_key=keys[0], path=item.path, source=item.source,
                                  captions=Captions("a thing")) for k in keys])


def outcomes(tasks: list[Task]) -> dict[str, tuple]:
    return {o.key: (o.status, o.reason) for t in tasks for o in t.outcomes}


def test_a_stage_gets_the_clips_of_several_tasks_in_batches_of_its_size():
    chain = chain_of(3)
    tasks = chain([task_of("a", "b"), task_of("drop"), task_of("bad"), task_of("c")])
    assert chain.stages[0].batches == [["a", "b", "drop"], ["bad", "c"]]
    assert outcomes(tasks) == {"a": (Status.WRITTEN, None), "b": (Status.WRITTEN, None), "c": (Status.WRITTEN, None),
                               "drop": (Status.DROPPED, "unwanted"), "bad": (Status.FAILED, "error")}
    failed = next(o for o in tasks[2].outcomes if o.key == "bad")
    assert "RuntimeError: boom" in failed.message
    assert all(not t.clips for t in tasks)


def test_a_failed_batch_fails_its_clips_and_no_others():
    chain = chain_of(2)
    tasks = chain([task_of("a"), task_of("crash"), task_of("b")])
    assert outcomes(tasks) == {"a": (Status.FAILED, "error"), "crash": (Status.FAILED, "error"),
                               "b": (Status.WRITTEN, None)}
    assert "MemoryError" in tasks[0].outcomes[0].message


def test_without_gpus_the_model_stages_fuse_with_the_cpu_stages():
    pipeline = load_pipeline("default", ["segment.resources.gpus=0.5"])
    assert len(stage_groups(pipeline.stages)) == 3
    cpu = on_cpu(pipeline.stages)
    assert len(stage_groups(cpu)) == 1 and all(s.resources.gpus == 0 for s in cpu)
    assert pipeline.spec("segment").resources.gpus == 0.5  # the pipeline itself is left as it was


@pytest.fixture
def cluster_with_one_gpu():
    """A local Ray that declares one GPU: Ray schedules by the count, the actors still compute on CPUs."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_gpu_pools_are_sized_by_the_gpus_and_cpu_pools_by_workers(cluster_with_one_gpu):
    pipeline = load_pipeline("default", ["segment.resources.gpus=0.25", "inpaint.resources.gpus=0.25"])
    executor = RayExecutor(pipeline, workers=3)
    assert executor.pool_sizes["segment"] == executor.pool_sizes["inpaint"] == 2  # two sets of 0.5 GPU
    assert executor.pool_sizes["decode"] == executor.pool_sizes["write"] == 3
    with pytest.raises(ValueError, match="need 1.5 GPUs"):
        RayExecutor(load_pipeline("default", ["segment.resources.gpus=0.75", "inpaint.resources.gpus=0.75"]), 2)


def test_a_build_with_a_gpu_stage_writes_what_the_cpu_build_writes(cluster_with_one_gpu, raw, inline_build, tmp_path,
                                                                   small):
    pipeline = load_pipeline("default", [*small, "segment.resources.gpus=0.5"])
    summary = build(raw, tmp_path / "out", pipeline, workers=2, executor="ray")
    assert summary.inputs == inline_build[1].inputs
    assert set(summary.stage_rates) == {s.stage for s in pipeline.stages}
    too_big = load_pipeline("default", [*small, "segment.resources.gpus=2"])
    with pytest.raises(BuildError, match="the Ray cluster has 1"):
        build(raw, tmp_path / "too-big", too_big, workers=2, executor="ray")


def test_stage_rates_count_each_stages_workers():
    meter = StageMeter(["segment", "write"])
    meter.pools.update(segment=2, write=1)
    clip = Clip(key="a", input_key="a", path="", source="", captions=Captions("x"), timings={"segment": 3.0, "write": 1.0})
    for _ in range(2):
        meter.add(Task(InputItem("a", "", ""), outcomes=[Outcome("a", Status.WRITTEN, clip=clip)]))
    assert meter.rates() == pytest.approx({"segment": 40.0, "write": 60.0})
