"""One training loop for LayerT2V's three stages; the stage is configuration.

- stage 1 `alpha_vae`: the alpha adapter of the frozen Wan VAE (project-in + decoder LoRA);
- stage 2 `joint`: LayerAdaLN, routing and a DiT LoRA on one-foreground samples;
- stage 3 `multi_foreground`: the same job continued from stage 2 on up to four foregrounds.

A run folder holds `run.json` (what it was trained from, so later stages and the sampler
find the base model and earlier adapters), `checkpoints/step-N` (resumable: weights, EMA,
optimizer, schedule, RNG and data position), `final/` (the exported adapters, EMA weights),
`metrics.jsonl`, `tensorboard/` and `loss.png`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from vidlayer.config import PipelineError, build_dataclass

from .alpha import alpha_loss, alpha_metrics
from .checkpoint import latest_checkpoint, load_checkpoint, optimizer_state, restore_optimizer, save_checkpoint
from .data import DATA_FAULTS, DataConfig, LayerBatch, LayerLoader
from .latent_cache import CachedBatch, CachedLoader, cache_latents
from .flow import flow_matching_loss, sample_tasks, task_mask
from .plots import plot_loss_curve
from .presets import get_preset, write_tiny_checkpoint
from .runs import ConfigError, run_provenance
from .sharding import gather, is_sharded, placed_like, shard_optimizer_state, shard_transformer, unsharded_copy
from .text import TextEncoder
from .transformer import LayeredWanTransformer
from .vae import LayerVAE

logger = logging.getLogger(__name__)
Stage = Literal["alpha_vae", "joint", "multi_foreground"]


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 500
    max_steps: int = 10000
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class LoraSettings:
    rank: int = 196
    alpha: int = 392


@dataclass
class TrainConfig:
    stage: Stage
    preset: str
    out: str
    data: DataConfig
    model: str | None = None
    init: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraSettings | None = None  # None on a DiT stage: full fine-tuning
    alpha_lora_rank: int = 128
    edge_weight: float = 1.0
    balance_alpha: bool = True  # weight matte and background pixels equally (see alpha.py)
    holdout: float = 0.1
    eval_batches: int = 4
    tasks: dict = field(default_factory=lambda: {"joint": 1.0})
    shift: float = 5.0
    positions: str = "concat"
    layer_routing: bool = True
    layer_adaln: bool = True  # false: the ablation without LayerAdaLN
    joint_attention: bool = True  # false: self-attention within each layer, the independent-generation baseline
    ema_decay: float | None = 0.9999
    mixed_precision: str = "auto"
    parallel: Literal["ddp", "fsdp"] = "ddp"  # with several processes: replicate the DiT, or shard it (14B)
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    stop_after: int | None = None  # end this session at this step (checkpointed), e.g. on preemptible machines
    seed: int = 0
    latent_cache: str | None = None  # stages 2-3: read `vidlayer cache-latents` output instead of encoding

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """What a resumed run must share with the checkpoint: everything but session limits."""
        keep = {k: v for k, v in self.to_dict().items() if k not in ("stop_after", "out")}
        # Limits on what the loader may read or skip do not change the batches.
        keep["data"] = {k: v for k, v in keep["data"].items() if k not in ("max_skipped", "allowed_schemes")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_config(path: str | Path, preset: str | None = None, data: str | None = None, out: str | None = None,
                overrides: tuple[str, ...] = ()) -> TrainConfig:
    """YAML config -> preset section merged in -> `key.sub=value` overrides -> validated TrainConfig."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no training config at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    presets = raw.pop("presets", {}) or {}
    raw["preset"] = preset or raw.get("preset")
    _merge(raw, presets.get(raw["preset"], {}))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):  # absent, or null like the tiny preset's `lora`
                node[part] = {}
            node = node[part]
        node[leaf] = yaml.safe_load(text)
    if data is not None:
        raw.setdefault("data", {})["shards"] = data
    if out is not None:
        raw["out"] = out
    try:
        get_preset(raw["preset"])
        sections = {"data": DataConfig, "optim": OptimConfig, "lora": LoraSettings}
        for name, cls in sections.items():
            if raw.get(name) is not None:
                raw[name] = build_dataclass(cls, raw[name], f"{path.name}: {name}")
        config = build_dataclass(TrainConfig, raw, path.name)
    except (PipelineError, ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    if config.parallel == "fsdp" and config.stage == "alpha_vae":
        raise ConfigError(f"{path.name}: stage 1 trains a small VAE adapter; use parallel: ddp")
    return config


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


class AlphaAdaptation:
    """Stage 1: reproduce alpha mattes through the frozen VAE with a learned adapter."""

    def __init__(self, config: TrainConfig, base: Path, inherited: dict[str, Any], device: torch.device) -> None:
        self.config = config
        self.vae = LayerVAE.from_pretrained(base).to(device)
        self.vae.add_decoder_lora(config.alpha_lora_rank)
        self.native = LayerVAE.from_pretrained(base).to(device)
        self.modules = [self.vae]

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.vae.trainable_parameters()

    def loss(self, batch: LayerBatch, model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        alpha = _alphas(batch).to(self.vae.latents_mean.device)
        return alpha_loss(model(alpha), alpha, self.config.edge_weight, self.config.balance_alpha)

    @torch.no_grad()
    def evaluate(self, batches: list[LayerBatch]) -> dict[str, Any]:
        """Adapted vs native VAE on held-out mattes."""
        truth = [_alphas(b).to(self.vae.latents_mean.device) for b in batches]
        report = {}
        for name, vae in (("native", self.native), ("adapted", self.vae)):
            predicted = torch.cat([vae(a) for a in truth])
            report[name] = alpha_metrics(predicted, torch.cat(truth))
        report["clips"] = sum(len(b.keys) for b in batches)
        return report

    def export(self, folder: Path, write: bool = True) -> dict[str, str]:
        if not write:
            return {}
        self.vae.save_adapter(folder / "alpha_adapter")
        return {"alpha_adapter": str(folder / "alpha_adapter")}


def _alphas(batch: LayerBatch) -> torch.Tensor:
    """Every matte of a batch as its own sample: [B*K, 1, T, H, W]."""
    return torch.cat([v for name, v in batch.videos.items() if name.startswith("alpha")])


def frozen_encoders(base: Path, inherited: dict[str, Any], device: torch.device) -> tuple[LayerVAE, TextEncoder]:
    """The VAE (with an earlier stage's alpha adapter) and the text encoder, frozen, bf16 on GPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = LayerVAE.from_pretrained(base, dtype=dtype).to(device)
    if inherited.get("alpha_adapter"):
        vae.load_adapter(inherited["alpha_adapter"])
    vae.requires_grad_(False)
    return vae, TextEncoder.from_pretrained(base, dtype=dtype).to(device)


class LayerLearning:
    """Stages 2 and 3: the layered DiT on packed layer latents with the flow-matching loss."""

    def __init__(self, config: TrainConfig, base: Path, inherited: dict[str, Any], device: torch.device) -> None:
        self.config = config
        self.device = device
        if not config.latent_cache:  # with a cache the encoders never run
            self.vae, self.text = frozen_encoders(base, inherited, device)
        self.text_length = get_preset(config.preset).text_length
        home = torch.device("cpu") if config.parallel == "fsdp" else device  # FSDP moves each shard to the device
        if inherited.get("transformer"):  # a fully fine-tuned earlier stage
            self.transformer = LayeredWanTransformer.from_pretrained(inherited["transformer"]).to(home)
        else:
            self.transformer = LayeredWanTransformer.from_wan(
                base, positions=config.positions, layer_routing=config.layer_routing,
                layer_adaln=config.layer_adaln, joint_attention=config.joint_attention,
            ).to(home)
        if config.lora is not None:
            self.transformer.add_lora(config.lora.rank, config.lora.alpha)
        if inherited.get("layer_weights"):
            self.transformer.load_layer_weights(inherited["layer_weights"])
        if config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.requires_grad_(False)
        for p in self.parameters():
            p.requires_grad_(True)
        self.modules = [self.transformer]

    def parameters(self) -> list[torch.nn.Parameter]:
        """Everything (full fine-tuning) or LayerAdaLN + the LoRA; a table the model does not use
        (`layer_adaln: false`) is left out, so it gets neither optimizer state nor weight decay."""
        use_table = self.transformer.config.layer_adaln
        return [p for n, p in self.transformer.named_parameters()
                if (use_table if n == "layer_modulation" else self.config.lora is None or ".lora_" in n)]

    @torch.no_grad()
    def encode(self, batch: LayerBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed clean latents [B, C, L*T', H', W'] and prompt embeddings [B, P, S, D], fp32."""
        layers = {name: self.vae.encode_layer(name, video).float() for name, video in batch.videos.items()}
        return batch.layout.pack(layers), self.text.encode_slots(batch.prompts, self.text_length).float()

    def loss(self, batch: LayerBatch | CachedBatch, model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(batch, CachedBatch):
            latents, prompts = batch.latents.to(self.device), batch.prompt_embeds.to(self.device)
        else:
            latents, prompts = self.encode(batch)
        tasks = sample_tasks(len(batch.keys), self.config.tasks)
        conditioning = torch.stack([task_mask(batch.layout, t) for t in tasks])
        loss, per_layer = flow_matching_loss(model, latents, prompts, batch.layout, conditioning, self.config.shift)
        return loss, {f"loss/{name}": v for name, v in per_layer.items()} | {"foregrounds": batch.layout.num_foregrounds}

    def export(self, folder: Path, write: bool = True) -> dict[str, str]:
        """Every process calls this: a sharded transformer is gathered first."""
        transformer = unsharded_copy(self.transformer, write) if is_sharded(self.transformer) else self.transformer
        if not write:
            return {}
        if self.config.lora is None:
            transformer.save_pretrained(folder / "transformer")
            return {"transformer": str(folder / "transformer")}
        transformer.save_layer_weights(folder / "layer_weights")
        return {"layer_weights": str(folder / "layer_weights")}


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Run (or resume) a stage; returns the run folder."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    inherited = run_provenance(config.init) if config.init else {}
    loader = _training_loader(config)
    base = _base_model(config, inherited, out)
    mixed = config.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=config.optim.grad_accum,
                              cpu=not torch.cuda.is_available())
    set_seed(config.seed, device_specific=True)

    job_cls = AlphaAdaptation if config.stage == "alpha_vae" else LayerLearning
    job = job_cls(config, base, inherited, accelerator.device)
    if config.parallel == "fsdp":  # sharded here, not by accelerate, which wraps models in FSDP on GPUs only
        shard_transformer(job.transformer, accelerator.device, mixed)
        model = job.transformer
    else:
        model = accelerator.prepare(job.modules[0])
    params = job.parameters()  # after sharding: FSDP replaces each parameter by its shard
    adamw = torch.optim.AdamW(params, lr=config.optim.lr, betas=tuple(config.optim.betas),
                              weight_decay=config.optim.weight_decay)
    schedule = get_cosine_schedule_with_warmup(adamw, config.optim.warmup_steps, config.optim.max_steps)
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True) if config.ema_decay else None
    # The schedule stays unprepared: accelerate would step it once per process, and ours counts optimizer steps.
    optimizer = accelerator.prepare(adamw)
    names = {id(p): n for n, p in job.modules[0].named_parameters()}
    resumable = Resumable([names[id(p)] for p in params], params, adamw, schedule, ema, loader, accelerator)
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    step = resumable.restore(checkpoint, config.fingerprint()) if checkpoint is not None else 0
    _write_provenance(out, config, base, inherited)
    log = MetricsLog(out, resume_step=step, enabled=accelerator.is_main_process)

    stop = min(config.optim.max_steps, config.stop_after or config.optim.max_steps)
    bar = tqdm(total=config.optim.max_steps, initial=step, desc=f"{config.stage}", disable=not progress,
               dynamic_ncols=True)
    batches = iter(loader)
    skipped: Counter[str] = Counter()
    model.train()
    while step < stop:
        batch = next(batches)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, metrics = job.loss(batch, model)
            accelerator.backward(loss)
            grad_norm = gather(accelerator.clip_grad_norm_(params, config.optim.grad_clip)) \
                if accelerator.sync_gradients else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        step += 1
        schedule.step()
        if ema is not None:
            ema.step(params)
        loss_value = float(accelerator.gather(loss.detach()).mean())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if step % config.log_every == 0 or step == stop:
            skipped = _skipped(loader)
            log.write(step, {"loss": loss_value, "lr": schedule.get_last_lr()[0],
                             "grad_norm": float(grad_norm) if grad_norm is not None else None, **metrics,
                             **{f"skipped/{reason}": n for reason, n in sorted(skipped.items())}})
        if step % config.checkpoint_every == 0 or step == stop:
            resumable.save(out / "checkpoints", step, config.fingerprint())
    bar.close()
    broken = {reason: n for reason, n in skipped.items() if reason in DATA_FAULTS}
    if broken and accelerator.is_main_process:
        logger.warning("%d samples skipped as broken this session (%s); metrics.jsonl has skipped/* by step",
                       sum(broken.values()), ", ".join(f"{reason} {n}" for reason, n in sorted(broken.items())))
    if step >= config.optim.max_steps:
        _finish(job, ema, params, out, config, accelerator.is_main_process)
    log.close()
    # A rank that destroys the process group while another still writes a checkpoint can hang both.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


@dataclass
class Resumable:
    """What a checkpoint holds besides the config: the trained weights, optimizer, schedule, EMA,
    and each process's data position and RNG (every rank reads its own shards, draws its own noise)."""

    names: list[str]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: Any
    ema: EMAModel | None
    loader: LayerLoader | CachedLoader
    accelerator: Accelerator

    def save(self, folder: Path, step: int, fingerprint: str) -> None:
        """Every process calls this (sharded tensors are gathered whole); the main one writes."""
        ranks = gather_object([{"data": self.loader.state_dict(), "rng": torch.get_rng_state()}])
        tensors = gather({
            "trainable": dict(zip(self.names, self.params)),
            "optimizer": optimizer_state(self.optimizer),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        })
        if self.accelerator.is_main_process:
            save_checkpoint(folder, step, {"fingerprint": fingerprint, **tensors,
                                           "schedule": self.schedule.state_dict(), "ranks": ranks})

    def restore(self, checkpoint: Path, fingerprint: str) -> int:
        """Load a checkpoint into everything; returns its step."""
        step, state = load_checkpoint(checkpoint)
        if state["fingerprint"] != fingerprint:
            raise ConfigError(f"{checkpoint} was written by a different config; use another OUT or --no-resume")
        processes = self.accelerator.num_processes
        if len(state["ranks"]) != processes:
            raise ConfigError(f"{checkpoint} was written by {len(state['ranks'])} processes, this run has "
                              f"{processes}; resume with the same number")
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(placed_like(state["trainable"][name], p))
        restore_optimizer(self.optimizer, shard_optimizer_state(state["optimizer"], self.params))
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            shadow = [placed_like(s, p) for s, p in zip(state["ema"]["shadow_params"], self.params)]
            self.ema.load_state_dict({**state["ema"], "shadow_params": shadow})
        mine = state["ranks"][self.accelerator.process_index]
        self.loader.load_state_dict(mine["data"])
        torch.set_rng_state(mine["rng"])
        return step


def _training_loader(config: TrainConfig) -> LayerLoader | CachedLoader:
    """The stage's data; a missing or empty source is the user's to fix, so it is a ConfigError."""
    data = config.data
    try:
        if config.latent_cache and config.stage != "alpha_vae":
            return CachedLoader(config.latent_cache, data.batch_size, data.seed, data.shuffle_buffer,
                                data.caption_dropout, data.foregrounds)
        if config.stage == "alpha_vae":
            return LayerLoader(dataclasses.replace(data, split="train" if config.holdout > 0 else "all",
                                                   holdout=config.holdout, alpha_only=True))
        return LayerLoader(data)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"{e} (build shards with `make demo` or `vidlayer build`)") from None


def _skipped(loader: LayerLoader | CachedLoader) -> Counter[str]:
    """Samples the loaders of all processes left out this session, by reason; cached latents skip none.

    Every process calls this at the same steps: each one reads its own shards.
    """
    total: Counter[str] = Counter()
    for counts in gather_object([dict(loader.skipped) if isinstance(loader, LayerLoader) else {}]):
        total.update(counts)
    return total


def _finish(job, ema, params, out: Path, config: TrainConfig, is_main_process: bool) -> None:
    """Export the (EMA) adapters, evaluate stage 1 on held-out clips, draw the loss curve.

    Every process calls this, so that a sharded model can be gathered; the main one writes.
    """
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    exported = job.export(out / "final", write=is_main_process)
    if is_main_process and isinstance(job, AlphaAdaptation) and config.holdout > 0:
        held = LayerLoader(dataclasses.replace(config.data, split="holdout", holdout=config.holdout, repeat=False,
                                               batch_size=1, random_crop=False, shuffle_buffer=0,
                                               caption_dropout=0.0, alpha_only=True))
        try:
            batches = [b for _, b in zip(range(config.eval_batches), held)]
        except ValueError as e:  # no clip fell into the held-out share
            logger.warning("no held-out evaluation: %s", e)
            batches = []
        if batches:
            report = job.evaluate(batches)
            (out / "eval.json").write_text(json.dumps(report, indent=2))
            exported["eval"] = str(out / "eval.json")
    if ema is not None:
        ema.restore(params)
    if not is_main_process:
        return
    provenance = json.loads((out / "run.json").read_text())
    provenance.update(exported)
    provenance["finished"] = True
    (out / "run.json").write_text(json.dumps(provenance, indent=2))
    plot_loss_curve(out / "metrics.jsonl", out / "loss.png", title=f"{config.stage} ({config.preset})")


def _base_model(config: TrainConfig, inherited: dict[str, Any], out: Path) -> Path:
    """The Wan folder to start from: the config's, the earlier stage's, or a written tiny one."""
    if config.model:
        return Path(config.model)
    if inherited.get("model"):
        return Path(inherited["model"])
    if config.preset == "tiny":
        base = out / "base-tiny"
        if not (base / "transformer" / "config.json").exists():
            write_tiny_checkpoint(base, seed=config.seed)
        return base
    raise ConfigError(f"preset {config.preset} needs `model:` (a local diffusers Wan folder)")


def _write_provenance(out: Path, config: TrainConfig, base: Path, inherited: dict[str, Any]) -> None:
    """What this run builds on; `_finish` adds its own exports, which override the inherited ones."""
    provenance = {
        "stage": config.stage, "preset": config.preset, "model": str(base), "init": config.init,
        **{k: inherited.get(k) for k in ("alpha_adapter", "layer_weights", "transformer")},
        "positions": config.positions, "layer_routing": config.layer_routing,
        "layer_adaln": config.layer_adaln, "joint_attention": config.joint_attention,
        "config": config.to_dict(), "finished": False,
    }
    (out / "run.json").write_text(json.dumps(provenance, indent=2, default=str))


class MetricsLog:
    """metrics.jsonl + TensorBoard; a resumed run first drops lines past its checkpoint."""

    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        if not enabled:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()


def build_latent_cache(config: TrainConfig, out: str | Path, progress: bool = True) -> int:
    """Encode a stage's training clips once (centre crop) with the encoders that stage would use."""
    if config.stage == "alpha_vae":
        raise ConfigError("stage 1 trains on the mattes themselves; cache latents for stages 2 and 3")
    inherited = run_provenance(config.init) if config.init else {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae, text = frozen_encoders(_base_model(config, inherited, Path(config.out)), inherited, device)
    return cache_latents(config.data, vae, text, get_preset(config.preset).text_length, Path(out), progress)
