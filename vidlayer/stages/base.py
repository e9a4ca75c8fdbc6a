"""The stage interface and the registry that the pipeline YAML selects backends from.

A stage is one step of the build (decode, segment, ...). Each step can have several
backends (the weights-free `motion` segmenter, `sam2`, ...); a backend is a small class with
a `Params` dataclass for its settings, the resources one worker needs, a `setup` that runs
once per worker (load a model, warm a JIT) and a `process` that handles one clip.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from vidlayer.clip import Clip


@dataclass(frozen=True)
class Resources:
    """What one worker running this stage reserves from the Ray cluster."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class NoParams:
    """For backends without settings."""


class Stage(ABC):
    stage: ClassVar[str]
    backend: ClassVar[str]
    Params: ClassVar[type] = NoParams
    default_resources: ClassVar[Resources] = Resources()

    def __init__(self, params: Any, resources: Resources | None = None):
        self.params = params
        self.resources = resources or self.default_resources

    def setup(self) -> None:
        """Runs once per worker before the first clip."""

    @abstractmethod
    def process(self, clip: Clip) -> Clip | list[Clip]:
        """Return the clip (or the clips it was split into); raise `Drop` to drop it."""

    @property
    def batch_size(self) -> int:
        """Clips per `process_batch` call: a model stage's `batch_size` setting, else one."""
        return max(1, int(getattr(self.params, "batch_size", 1)))

    def process_batch(self, clips: list[Clip]) -> list[Clip | list[Clip] | Exception]:
        """One result per clip, in order; an exception in place of a result drops (`Drop`) or fails
        that clip alone. Model stages override this to run several clips through one forward pass."""
        results: list[Clip | list[Clip] | Exception] = []
        for clip in clips:
            try:
                results.append(self.process(clip))
            except Exception as error:
                results.append(error)
        return results


class BatchedStage(Stage):
    """A stage that works on batches, such as a model's forward pass; one clip is a batch of one."""

    def process(self, clip: Clip) -> Clip | list[Clip]:
        result = self.process_batch([clip])[0]
        if isinstance(result, Exception):
            raise result
        return result

    @abstractmethod
    def process_batch(self, clips: list[Clip]) -> list[Clip | list[Clip] | Exception]:
        """One result per clip, in order; an exception in place of a result drops or fails that clip."""


_REGISTRY: dict[tuple[str, str], type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator that makes a backend selectable from a pipeline YAML."""
    key = (cls.stage, cls.backend)
    if key in _REGISTRY:
        raise ValueError(f"backend {cls.backend!r} of stage {cls.stage!r} is registered twice")
    _REGISTRY[key] = cls
    return cls


def stage_class(stage: str, backend: str) -> type[Stage]:
    try:
        return _REGISTRY[(stage, backend)]
    except KeyError:
        known = sorted(b for s, b in _REGISTRY if s == stage)
        if not known:
            stages = sorted({s for s, _ in _REGISTRY})
            raise KeyError(f"unknown stage {stage!r} (known: {', '.join(stages)})") from None
        raise KeyError(f"unknown backend {backend!r} for stage {stage!r} (known: {', '.join(known)})") from None


def registered() -> dict[tuple[str, str], type[Stage]]:
    return dict(_REGISTRY)
