"""Wan's flow-matching objective over a packed layer sequence, and the guided sampler.

Flow matching: x_s = (1 - s) x_0 + s eps, and the model predicts the velocity eps - x_0 at
timestep 1000 s. Wan shifts s towards noise, s' = shift s / (1 + (shift - 1) s), which
matters more the more tokens a sample has.

Per-layer noise levels make one model do several jobs: a layer given clean (s = 0) is a
condition, and only the other layers are denoised and scored. The task modes below are
the ones LayerFlow trains separate checkpoints for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin, UniPCMultistepScheduler

from .layout import Layout, LayerType
from .transformer import LayeredWanTransformer

NUM_TRAIN_TIMESTEPS = 1000

# Which layer types are given clean in each task mode.
TASKS: dict[str, frozenset[LayerType]] = {
    "joint": frozenset(),
    "decompose": frozenset({LayerType.FULL}),
    "background": frozenset({LayerType.FOREGROUND, LayerType.ALPHA}),
    "foreground": frozenset({LayerType.BACKGROUND}),
}


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def task_mask(layout: Layout, task: str) -> torch.Tensor:
    """[L] bool: True for the layers the task gives clean."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return torch.tensor([t in TASKS[task] for t in layout.types])


def sample_tasks(batch: int, probabilities: Mapping[str, float], generator: torch.Generator | None = None) -> list[str]:
    """Draw one task mode per sample from {task: probability} (normalised)."""
    names = list(probabilities)
    unknown = set(names) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {sorted(TASKS)}")
    weights = torch.tensor([float(probabilities[n]) for n in names])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"task probabilities must be non-negative with a positive sum, got {dict(probabilities)}")
    picks = torch.multinomial(weights, batch, replacement=True, generator=generator)
    return [names[i] for i in picks]


def flow_matching_loss(
    model: LayeredWanTransformer,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    layout: Layout,
    conditioning: torch.Tensor | None = None,
    shift: float = 5.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared velocity error over the generated layers of a packed batch.

    latents: clean packed [B, C, L*T', H', W']; conditioning: [B, L] bool (True = given
    clean, no loss) or None for joint generation. Inputs stay fp32; mixed precision is the
    caller's autocast. Returns the loss and per-layer errors.
    """
    batch, frames = latents.shape[0], latents.shape[2]
    per_layer = frames // layout.num_layers
    if conditioning is None:
        conditioning = torch.zeros(batch, layout.num_layers, dtype=torch.bool)
    conditioning = conditioning.to(latents.device)
    if conditioning.all(dim=1).any():
        raise ValueError("every sample needs at least one layer to generate")

    sigma = shift_sigmas(torch.rand(batch, generator=generator).to(latents.device), shift)
    layer_sigma = torch.where(conditioning, 0.0, sigma[:, None])
    s = layout.per_layer(layer_sigma, per_layer)[:, None, :, None, None]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    noisy = (1 - s) * latents + s * noise

    velocity = model(noisy, layer_sigma * NUM_TRAIN_TIMESTEPS, prompt_embeds, layout)
    error = (velocity.float() - (noise - latents).float()).pow(2).mean(dim=(1, 3, 4))
    error = error.unflatten(1, (layout.num_layers, per_layer)).mean(dim=2)
    generated = (~conditioning).float()
    loss = (error * generated).sum() / generated.sum()
    counts = generated.sum(dim=0)
    scored = error.detach() * generated
    layer_errors = {
        name: float(scored[:, i].sum() / counts[i])
        for i, name in enumerate(layout.names) if counts[i] > 0
    }
    return loss, layer_errors


def make_scheduler(name: str, shift: float) -> SchedulerMixin:
    """The two samplers Wan ships with, configured for flow matching with a timestep shift."""
    if name == "flow-euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True,
            flow_shift=shift,
        )
    raise ValueError(f"unknown scheduler {name!r}; choose 'flow-euler' or 'unipc'")


@torch.no_grad()
def sample_latents(
    model: LayeredWanTransformer,
    scheduler: SchedulerMixin,
    layout: Layout,
    latent_shape: tuple[int, int, int, int],
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None = None,
    guidance_scale: float = 5.0,
    steps: int = 50,
    conditions: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise a packed sample from noise; returns clean packed latents [B, C, L*T', H', W'].

    latent_shape: (C, T', H', W') of one layer. prompt_embeds / negative_embeds: [B, P, S, D]
    with one (negative) prompt per slot. conditions: clean latents [B, C, T', H', W'] for
    layers that are given; they get timestep 0 and are put back after every step, so they
    come out exactly as they went in.
    """
    conditions = dict(conditions or {})
    unknown = set(conditions) - set(layout.names)
    if unknown:
        raise ValueError(f"conditions name unknown layers {sorted(unknown)}; layers are {layout.names}")
    if len(conditions) == layout.num_layers:
        raise ValueError("every layer is given; nothing to sample")
    batch = prompt_embeds.shape[0]
    channels, frames, height, width = latent_shape
    device = prompt_embeds.device
    given = torch.tensor([name in conditions for name in layout.names], device=device)
    frame_given = layout.per_layer(given[None], frames)[0]

    def put_back(latents: torch.Tensor) -> torch.Tensor:
        if not conditions:
            return latents
        clean = layout.unpack(latents)
        clean.update({name: value.to(latents) for name, value in conditions.items()})
        return layout.pack(clean)

    shape = (batch, channels, frames * layout.num_layers, height, width)
    latents = put_back(torch.randn(shape, generator=generator).to(device))
    guided = negative_embeds is not None and guidance_scale != 1.0
    text = torch.cat([prompt_embeds, negative_embeds]) if guided else prompt_embeds
    scheduler.set_timesteps(steps, device=device)
    for i, t in enumerate(scheduler.timesteps):
        layer_t = torch.where(given, 0.0, t.float()).expand(text.shape[0], -1)
        model_in = torch.cat([latents, latents]) if guided else latents
        velocity = model(model_in.to(model.dtype), layer_t, text.to(model.dtype), layout).float()
        if guided:
            cond, uncond = velocity.chunk(2)
            velocity = uncond + guidance_scale * (cond - uncond)
        velocity[:, :, frame_given] = 0.0
        latents = put_back(scheduler.step(velocity, t, latents, return_dict=False)[0])
        if progress is not None:
            progress(i + 1, len(scheduler.timesteps))
    return latents
