"""`vidlayer repro-toy`: the paper's ablations on the toy domain, end to end, resumable.

1. data: `vidlayer synth --toy` shards (train, and a test split of held-out attribute pairs);
2. base: the toy base model (`layert2v.toy_base`: a VAE fitted to the toy domain, random DiT);
3. stage 1: the alpha adapter on that VAE, once;
4. latent caches: one per alpha path the variants use (adapter, native);
5. every variant x seed: the toy DiT trained from scratch (stage3.yaml's `toy` section plus the
   variant's overrides), then sampled on held-out and training prompts and scored by
   `vidlayer eval-generation`; the per-layer-timestep tasks sample the full model with true
   layers given;
6. references: the true layers, and the true layers through the VAE (what generation can reach);
7. the report (`layert2v.repro.report`).

Each step leaves a marker (a finished run, `cache.json`, `score.json`), so a rerun after a kill
continues where it stopped and only what is missing is done.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from vidlayer.config import PipelineError, build_dataclass
from vidlayer.evaluation.generation import GeneratedSample, evaluate_generation, load_samples
from vidlayer.toy import DEFAULT_FPS, write_toy_dataset

from ..pipeline import LayeredVideo, LayerPrompts, LayerT2VPipeline
from ..runs import ConfigError, run_provenance
from ..toy_base import INFO as BASE_INFO
from ..toy_base import VaeFit, write_toy_base
from ..train import TrainConfig, build_latent_cache, load_config, train
from .report import write_results

CONFIGS = files("layert2v") / "configs"
SCORE = "score.json"
STUDY = "study.json"  # the settings a study folder was made with
TRAIN_SECONDS = "train_seconds.txt"  # written by the study when it trains a variant
SAMPLE_BATCH = 8  # prompts sampled together (same foreground count)


@dataclass
class Variant:
    label: str
    what: str
    set: list[str] = field(default_factory=list)  # overrides of stage3.yaml's toy section
    alpha: Literal["adapter", "native"] = "adapter"


@dataclass
class Task:
    label: str
    what: str
    given: list[Literal["full", "foregrounds"]]


@dataclass
class ReproConfig:
    out: str
    report: str
    variants: dict[str, Variant]
    tasks: dict[str, Task] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    train_samples: int = 2000
    test_samples: int = 200
    eval_test: int = 24
    eval_seen: int = 24
    dataset_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    vae: VaeFit = field(default_factory=VaeFit)
    stage1: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    sample_steps: int = 20
    guidance: float = 4.0

    def __post_init__(self) -> None:
        if "full" not in self.variants:
            raise ValueError("the variants must include `full`: the tasks and claims compare against it")
        if not self.seeds or self.eval_test + self.eval_seen < 1:
            raise ValueError("need at least one seed and one prompt to evaluate")


def load_repro_config(path: str | Path | None = None, overrides: tuple[str, ...] = ()) -> ReproConfig:
    """The YAML (default: the packaged repro_toy.yaml) with `key=value` overrides of its top-level settings."""
    source = Path(path) if path is not None else CONFIGS / "repro_toy.yaml"
    raw = yaml.safe_load(source.read_text()) or {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value (or vae.key=value)")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    try:
        raw["variants"] = {n: build_dataclass(Variant, v, f"variant {n}") for n, v in raw.get("variants", {}).items()}
        raw["tasks"] = {n: build_dataclass(Task, v, f"task {n}") for n, v in (raw.get("tasks") or {}).items()}
        raw["vae"] = build_dataclass(VaeFit, raw.get("vae") or {}, "vae")
        return build_dataclass(ReproConfig, raw, Path(str(source)).name)
    except (PipelineError, ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


class Study:
    """The folders of one study under `config.out` and the steps that fill them."""

    def __init__(self, config: ReproConfig, command: str = "make repro-toy", progress: bool = True) -> None:
        self.config = config
        self.command = command
        self.out = Path(config.out)
        self.progress = progress
        self.data = self.out / "data"
        self.base = self.out / "base"
        self.stage1 = self.out / "stage1"
        self.timings: dict[str, float] = {}

    def run(self) -> Path:
        """Every step, each skipped when its output is already complete; returns the report's path."""
        self.claim_folder()
        self._timed("data", self.make_data)
        self._timed("toy VAE", lambda: write_toy_base(self.base, self.data, self.config.dataset_seed,
                                                      self.config.vae, self.progress))
        self._timed("stage 1", lambda: self._train(self.stage1, self._stage1_config()))
        rows = []
        for name, variant in self.config.variants.items():
            rows.append(self._row(name, "variant", variant.label, variant.what,
                                  {seed: self.variant(name, seed) for seed in self.config.seeds}))
        for name, task in self.config.tasks.items():
            rows.append(self._row(name, "task", task.label, task.what,
                                  {seed: self.task(name, seed) for seed in self.config.seeds}))
        rows += self._timed("references", self.references)
        return write_results(self.results(rows), Path(self.config.report), Path(self.config.report).parent
                             / "figures" / "repro-toy")

    def _timed(self, name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = step()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return result

    def claim_folder(self) -> None:
        """Record the settings in `out/study.json`; refuse a folder that holds a study with other settings,
        whose finished steps would otherwise be reused as if they were this one's."""
        settings = {k: v for k, v in asdict(self.config).items() if k != "report"}
        record = self.out / STUDY
        if record.exists():
            held = json.loads(record.read_text())
            if held != json.loads(json.dumps(settings)):
                changed = sorted(k for k in settings if held.get(k) != json.loads(json.dumps(settings[k])))
                raise ConfigError(f"{self.out} holds a study with other settings ({', '.join(changed)}); "
                                  "choose another out folder")
            return
        self.out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=1))

    # -- data, base and stage 1 -------------------------------------------------------------------

    def make_data(self) -> None:
        if not (self.data / "toy.json").exists():
            write_toy_dataset(self.data, self.config.train_samples, self.config.test_samples,
                              seed=self.config.dataset_seed, progress=self.progress)

    def _stage1_config(self) -> TrainConfig:
        return load_config(CONFIGS / "stage1.yaml", preset="toy", data=str(self.data / "train"), out=str(self.stage1),
                           overrides=(f"model={self.base}", *self.config.stage1))

    def _train(self, out: Path, config: TrainConfig) -> None:
        if not _finished(out):
            train(config, progress=self.progress)

    # -- variants -------------------------------------------------------------------------------

    def cache(self, alpha: str) -> Path:
        """Latents of the training split through the adapter's or the native alpha path, encoded once."""
        folder = self.out / f"cache-{alpha}"
        if not (folder / "cache.json").exists():
            config = self._variant_config("full", alpha, self.out / "unused", self.config.seeds[0], cache=None)
            for partial in folder.glob("*"):
                partial.unlink()
            self._timed("latent caches", lambda: build_latent_cache(config, folder, self.progress))
        return folder

    def _variant_config(self, name: str, alpha: str, out: Path, seed: int, cache: Path | None) -> TrainConfig:
        variant = self.config.variants[name]
        init = str(self.stage1) if alpha == "adapter" else "null"
        overrides = (f"model={self.base}", f"init={init}", f"seed={seed}", f"data.seed={seed}",
                     *([f"latent_cache={cache}"] if cache is not None else []), *self.config.train, *variant.set)
        return load_config(CONFIGS / "stage3.yaml", preset="toy", data=str(self.data / "train"), out=str(out),
                           overrides=overrides)

    def run_folder(self, name: str, seed: int) -> Path:
        return self.out / "runs" / name / f"seed{seed}"

    def variant(self, name: str, seed: int) -> dict[str, Any]:
        """Train (if needed), sample and score one variant with one seed."""
        alpha = self.config.variants[name].alpha
        run = self.run_folder(name, seed)
        config = self._variant_config(name, alpha, run, seed, self.cache(alpha))
        if not _finished(run):
            start = time.perf_counter()
            self._timed("training", lambda: train(config, progress=self.progress))
            (run / TRAIN_SECONDS).write_text(f"{time.perf_counter() - start:.1f}\n")
        samples = self.out / "samples" / name / f"seed{seed}"
        score = self._timed("sampling and scoring", lambda: self._score(
            samples, lambda: self._generate(run, samples, seed, given=())))
        return {**score, "metrics": str(run / "metrics.jsonl"), "seconds": float((run / TRAIN_SECONDS).read_text())}

    def task(self, name: str, seed: int) -> dict[str, Any]:
        """Sample the full model with true layers given, one prompt at a time (each has its own given layers)."""
        run = self.run_folder("full", seed)
        samples = self.out / "samples" / f"task-{name}" / f"seed{seed}"
        given = tuple(self.config.tasks[name].given)
        return self._timed("sampling and scoring", lambda: self._score(
            samples, lambda: self._generate(run, samples, seed, given=given)))

    @cached_property
    def prompts(self) -> list[GeneratedSample]:
        """The evaluated prompts with their true layers: the first held-out and the first training samples."""
        def first(split: str, count: int) -> list[GeneratedSample]:
            found = load_samples(self.data / split)
            return [s for _, s in zip(range(count), found)]
        return first("test", self.config.eval_test) + first("train", self.config.eval_seen)

    def _generate(self, run: Path, samples: Path, seed: int, given: tuple[str, ...]) -> None:
        pipe = LayerT2VPipeline.from_run(run, device="cuda" if torch.cuda.is_available() else "cpu")
        truths = self.prompts
        groups: dict[int, list[GeneratedSample]] = {}
        for truth in truths:
            groups.setdefault(len(truth.alphas), []).append(truth)
        batch = 1 if given else SAMPLE_BATCH
        with tqdm(total=len(truths), desc=f"sampling {samples.parent.name} seed {seed}", disable=not self.progress,
                  dynamic_ncols=True) as bar:
            for group in groups.values():
                for i in range(0, len(group), batch):
                    chunk = group[i:i + batch]
                    conditions = _given_layers(chunk[0], given) if given else None
                    videos = pipe([_prompts(t) for t in chunk], num_frames=len(chunk[0].full),
                                  height=chunk[0].full.shape[1], width=chunk[0].full.shape[2],
                                  steps=self.config.sample_steps, guidance_scale=self.config.guidance,
                                  seed=seed * 100003 + truths.index(chunk[0]), given=conditions)
                    for truth, video in zip(chunk, videos):
                        _save_sample(video, truth, samples / truth.key)
                    bar.update(len(chunk))

    def _score(self, samples: Path, generate: Callable[[], None]) -> dict[str, Any]:
        """Generate into `samples` unless its score exists, then score it; the score file marks it done."""
        if (samples / SCORE).exists():
            return json.loads((samples / SCORE).read_text())
        generate()
        evaluation = evaluate_generation(load_samples(samples))
        first = self.prompts[0].key
        score = {"summary": evaluation.summary(), "sheet": str(samples / first / "contact_sheet.png")}
        (samples / "rows.json").write_text(json.dumps(evaluation.rows, indent=1))
        (samples / SCORE).write_text(json.dumps(score, indent=1))
        return score

    # -- references and report ------------------------------------------------------------------

    def references(self) -> list[dict[str, Any]]:
        """The true layers, and the true layers encoded and decoded by the VAE with each alpha path."""
        rows = []
        truth = self.out / "samples" / "truth"
        score = self._score(truth, lambda: [_save_sample(_layered(t), t, truth / t.key) for t in self.prompts])
        rows.append(self._row("truth", "reference", "true layers", "the data itself, scored like a sample",
                              {0: score}))
        for alpha in sorted({v.alpha for v in self.config.variants.values()}):
            run = self.run_folder(next(n for n, v in self.config.variants.items() if v.alpha == alpha),
                                  self.config.seeds[0])
            folder = self.out / "samples" / f"vae-{alpha}"
            score = self._score(folder, lambda: self._round_trip(run, folder))
            rows.append(self._row(f"vae_{alpha}", "reference", f"true layers through the VAE ({alpha} alpha)",
                                  "encoded and decoded: the best a generated sample can look", {0: score}))
        return rows

    def _round_trip(self, run: Path, folder: Path) -> None:
        pipe = LayerT2VPipeline.from_run(run)
        for truth in self.prompts:
            prompts = _prompts(truth)
            packed = prompts.layout.pack(pipe.encode_layers(_true_layers(truth)))
            with torch.no_grad():
                (video,) = pipe.decode(prompts.layout, packed, DEFAULT_FPS, [prompts])
            _save_sample(video, truth, folder / truth.key)

    def _row(self, name: str, group: str, label: str, what: str, seeds: dict[int, dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "group": group, "label": label, "what": what,
                "seeds": {str(seed): value for seed, value in seeds.items()}}

    def results(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        base = json.loads((self.base / BASE_INFO).read_text())
        stage1 = run_provenance(self.stage1)
        alpha_eval = json.loads(Path(stage1["eval"]).read_text()) if stage1.get("eval") else {}
        trained = self._variant_config("full", "adapter", self.out / "unused", 0, cache=None)
        return {
            "title": "LayerT2V ablations at toy scale",
            "settings": {
                "command": self.command,
                "device": _device(),
                "data": f"{self.config.train_samples} training samples, {self.config.test_samples} held-out "
                        f"(vidlayer synth --toy, seed {self.config.dataset_seed}); 17 frames at 64x64, 1-3 objects",
                "evaluated prompts": f"{self.config.eval_test} held-out + {self.config.eval_seen} seen, per variant "
                                     f"and seed; {self.config.sample_steps} sampling steps, guidance "
                                     f"{self.config.guidance}",
                "seeds": self.config.seeds,
                "DiT": f"toy preset (random init), {trained.optim.max_steps} steps of batch "
                       f"{trained.data.batch_size}, lr {trained.optim.lr}, tasks {trained.tasks}",
                "toy VAE": f"{base['vae_fit']['steps']} fit steps in {base['fit_seconds']:.0f} s; held-out "
                           f"reconstruction {base['held_out_psnr_db']} dB PSNR",
                "stage-1 alpha adapter (held-out mattes, native -> adapted)": _alpha_line(alpha_eval),
                "wall time of this invocation (s)": {k: round(v) for k, v in self.timings.items()},
            },
            "rows": rows,
            "claims": self.config.claims,
        }


def _finished(run: Path) -> bool:
    return (run / "run.json").exists() and bool(run_provenance(run).get("finished"))


def _alpha_line(report: dict[str, Any]) -> str:
    if not report:
        return "not evaluated"
    native, adapted = report["native"], report["adapted"]
    return ", ".join(f"{k} {native[k]:.3f} -> {adapted[k]:.3f}" for k in ("alpha_mae", "boundary_mae", "edge_sharpness"))


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _prompts(truth: GeneratedSample) -> LayerPrompts:
    captions = truth.request.captions()
    return LayerPrompts(captions.full, captions.background, tuple(captions.foreground))


def _true_layers(truth: GeneratedSample) -> dict[str, np.ndarray]:
    """A true sample as float layers in [0, 1], named as the layout names them."""
    layers = {"full": truth.full / 255.0, "background": truth.background / 255.0}
    for k, (fg, alpha) in enumerate(zip(truth.foregrounds, truth.alphas)):
        layers[f"fg{k}"] = fg / 255.0
        layers[f"alpha{k}"] = alpha.astype(np.float64)
    return {name: video.astype(np.float32) for name, video in layers.items()}


def _given_layers(truth: GeneratedSample, given: tuple[str, ...]) -> dict[str, np.ndarray]:
    layers = _true_layers(truth)
    names = {"full": ["full"], "foregrounds": [n for n in layers if n.startswith(("fg", "alpha"))]}
    return {name: layers[name] for part in given for name in names[part]}


def _layered(truth: GeneratedSample) -> LayeredVideo:
    return LayeredVideo(_true_layers(truth), DEFAULT_FPS, _prompts(truth))


def _save_sample(video: LayeredVideo, truth: GeneratedSample, folder: Path) -> None:
    """Write a sample folder that `vidlayer eval-generation` reads, with the exact toy scene it asked for."""
    video.save(folder)
    info = json.loads((folder / "sample.json").read_text())
    info["toy"] = truth.request.to_json()
    (folder / "sample.json").write_text(json.dumps(info, indent=2))
