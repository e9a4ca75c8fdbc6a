"""Pipeline definitions: YAML in, validated stage specs out.

A pipeline file names its stages in order, each with a backend, its parameters and the
resources a worker needs. Every key is checked against the backend's `Params` dataclass, so a
typo is an error rather than a silently ignored setting. `--set stage.param=value` overrides
any value from the command line. The config hash covers everything that changes the samples,
so a resumed build can tell whether it would mix two different pipelines in one output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vidlayer.stages import Stage, stage_class
from vidlayer.stages.base import Resources

# The top-level pipelines/ folder, installed as the data package `vidlayer.pipelines`.
PIPELINES_DIR = Path(str(resources.files("vidlayer.pipelines")))


class PipelineError(ValueError):
    """A pipeline file or override that cannot be used; the message says why in one line."""


@dataclass
class InputPolicy:
    require_caption: bool = True


@dataclass
class OutputPolicy:
    shard_max_samples: int = 64
    shard_max_bytes: int = 1_000_000_000


@dataclass
class StageSpec:
    stage: str
    backend: str
    # The class itself, not its name: unpickling it on a Ray worker imports (and registers) it.
    cls: type[Stage]
    params: Any
    resources: Resources

    def build(self) -> Stage:
        return self.cls(self.params, self.resources)


@dataclass
class Pipeline:
    name: str
    stages: list[StageSpec]
    description: str = ""
    input: InputPolicy = field(default_factory=InputPolicy)
    output: OutputPolicy = field(default_factory=OutputPolicy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input": dataclasses.asdict(self.input),
            "output": dataclasses.asdict(self.output),
            "stages": [
                {
                    "stage": s.stage,
                    "backend": s.backend,
                    "params": dataclasses.asdict(s.params),
                    "resources": dataclasses.asdict(s.resources),
                }
                for s in self.stages
            ],
        }

    def config_hash(self) -> str:
        """Hash of what determines the samples (not the description, not the resources)."""
        d = self.to_dict()
        d.pop("description")
        for s in d["stages"]:
            s.pop("resources")
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def spec(self, stage: str) -> StageSpec:
        for s in self.stages:
            if s.stage == stage:
                return s
        raise KeyError(stage)


def resolve_pipeline_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of one shipped in `pipelines/` (e.g. `default`)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return PIPELINES_DIR / f"{name_or_path}.yaml"


def load_pipeline(name_or_path: str | Path = "default", overrides: typing.Sequence[str] = ()) -> Pipeline:
    path = resolve_pipeline_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"pipeline file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PipelineError(f"cannot read pipeline {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"pipeline {path} must be a YAML mapping")
    for item in overrides:
        _apply_override(raw, item)
    return parse_pipeline(raw, str(path))


def parse_pipeline(raw: dict[str, Any], where: str = "pipeline") -> Pipeline:
    unknown = set(raw) - {"name", "description", "input", "output", "stages"}
    if unknown:
        raise PipelineError(f"{where}: unknown top-level keys {sorted(unknown)}")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise PipelineError(f"{where}: 'stages' must be a non-empty list")
    stages = [_parse_stage(s, where) for s in stages_raw]
    names = [s.stage for s in stages]
    if len(set(names)) != len(names):
        raise PipelineError(f"{where}: a stage appears twice in {names}")
    return Pipeline(
        name=str(raw.get("name", Path(where).stem)),
        description=str(raw.get("description", "")),
        input=build_dataclass(InputPolicy, raw.get("input") or {}, f"{where}: input"),
        output=build_dataclass(OutputPolicy, raw.get("output") or {}, f"{where}: output"),
        stages=stages,
    )


def _parse_stage(raw: Any, where: str) -> StageSpec:
    if not isinstance(raw, dict) or "stage" not in raw:
        raise PipelineError(f"{where}: each stage needs a 'stage' key, got {raw!r}")
    unknown = set(raw) - {"stage", "backend", "params", "resources"}
    if unknown:
        raise PipelineError(f"{where}: stage {raw['stage']!r} has unknown keys {sorted(unknown)}")
    stage, backend = str(raw["stage"]), str(raw.get("backend", "default"))
    try:
        cls = stage_class(stage, backend)
    except KeyError as e:
        raise PipelineError(f"{where}: {e.args[0]}") from None
    label = f"{where}: stage {stage}"
    params = build_dataclass(cls.Params, raw.get("params") or {}, label)
    resources = build_dataclass(Resources, raw.get("resources") or {}, label, defaults=cls.default_resources)
    return StageSpec(stage=stage, backend=backend, cls=cls, params=params, resources=resources)


def build_dataclass(cls: type, values: Any, where: str, defaults: Any = None) -> Any:
    """`cls(**values)` with every key checked and every value coerced to its type hint."""
    if not isinstance(values, dict):
        raise PipelineError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise PipelineError(f"{where}: unknown settings {sorted(unknown)} (known: {', '.join(sorted(names))})")
    base = dataclasses.asdict(defaults) if defaults is not None else {}
    coerced = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in values.items()}
    return cls(**{**base, **coerced})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except PipelineError:
                continue
        raise PipelineError(f"{where}: {value!r} is not a {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise PipelineError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise PipelineError(f"{where}: expected a list, got {value!r}")
        item_hint = args[0] if args else Any
        return tuple(_coerce(v, item_hint, where) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float:
        try:  # YAML 1.1 reads exponents without a dot (1e9) as strings
            return float(value)
        except (TypeError, ValueError):
            raise PipelineError(f"{where}: expected a number, got {value!r}") from None
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise PipelineError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply `stage.param=value`, `stage.backend=name`, `stage.resources.gpus=1` or `output.x=y`."""
    target, sep, text = item.partition("=")
    parts = target.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise PipelineError(f"override {item!r} must look like stage.param=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise PipelineError(f"override {item!r}: cannot parse value {text!r}") from None
    head, rest = parts[0], parts[1:]
    if head in ("input", "output"):
        raw.setdefault(head, {})
        raw[head] = {**(raw[head] or {}), rest[0]: value}
        return
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict) and stage.get("stage") == head:
            if rest == ["backend"]:
                stage["backend"] = value
            elif rest[0] == "resources" and len(rest) == 2:
                stage["resources"] = {**(stage.get("resources") or {}), rest[1]: value}
            elif len(rest) == 1:
                stage["params"] = {**(stage.get("params") or {}), rest[0]: value}
            else:
                raise PipelineError(f"override {item!r}: too many dots")
            return
    raise PipelineError(f"override {item!r}: the pipeline has no stage {head!r}")
