"""Which layers a sample has, in which order, and how they share one latent sequence.

LayerT2V serialises layers along the latent time axis: each layer is encoded on its own
to [C, T', H', W'] and the layers are concatenated to [C, L*T', H', W'], so the backbone
sees one long clip and every layer rides the same denoising trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

import torch

MAX_FOREGROUNDS = 8


class LayerType(IntEnum):
    """Row of the LayerAdaLN table; foregrounds share rows, their prompts tell them apart."""

    FULL = 0
    BACKGROUND = 1
    FOREGROUND = 2
    ALPHA = 3


@dataclass(frozen=True)
class Layout:
    """A sample's layers: full, background, then (fg_k, alpha_k) for k = 0..K-1.

    Prompts are ordered [full, background, fg_0, ..., fg_{K-1}]; one prompt per slot.
    """

    num_foregrounds: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.num_foregrounds <= MAX_FOREGROUNDS:
            raise ValueError(f"num_foregrounds must be in 1..{MAX_FOREGROUNDS}, got {self.num_foregrounds}")

    @cached_property
    def names(self) -> tuple[str, ...]:
        pairs = [name for k in range(self.num_foregrounds) for name in (f"fg{k}", f"alpha{k}")]
        return ("full", "background", *pairs)

    @cached_property
    def types(self) -> tuple[LayerType, ...]:
        pairs = [t for _ in range(self.num_foregrounds) for t in (LayerType.FOREGROUND, LayerType.ALPHA)]
        return (LayerType.FULL, LayerType.BACKGROUND, *pairs)

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @cached_property
    def prompt_names(self) -> tuple[str, ...]:
        return ("full", "background", *(f"fg{k}" for k in range(self.num_foregrounds)))

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def foreground_of(self, layer: int) -> int | None:
        """k for fg_k / alpha_k, None for full and background."""
        return (layer - 2) // 2 if layer >= 2 else None

    def visible_prompts(self, layer: int) -> tuple[int, ...]:
        """Prompt slots a layer's tokens may attend to (the paper's visibility table).

        full sees every prompt; background sees full + background; fg_k and alpha_k
        see full + fg_k, so foreground content cannot leak into the background and
        one foreground's prompt cannot steer another's layer.
        """
        if self.types[layer] == LayerType.FULL:
            return tuple(range(self.num_prompts))
        if self.types[layer] == LayerType.BACKGROUND:
            return (0, 1)
        return (0, 2 + self.foreground_of(layer))

    def visibility(self) -> torch.Tensor:
        """[layers, prompts] boolean table; used for the dense reference and for docs."""
        table = torch.zeros(self.num_layers, self.num_prompts, dtype=torch.bool)
        for layer in range(self.num_layers):
            table[layer, list(self.visible_prompts(layer))] = True
        return table

    def pack(self, layers: dict[str, torch.Tensor]) -> torch.Tensor:
        """Named per-layer latents [B, C, T', H', W'] -> one sequence [B, C, L*T', H', W']."""
        missing = set(self.names) - set(layers)
        extra = set(layers) - set(self.names)
        if missing or extra:
            raise ValueError(f"layers do not match {self.names}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        shapes = {tuple(layers[name].shape) for name in self.names}
        if len(shapes) != 1:
            raise ValueError(f"all layers must share one latent shape, got {sorted(shapes)}")
        return torch.cat([layers[name] for name in self.names], dim=2)

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of `pack`: [B, C, L*T', H', W'] -> named [B, C, T', H', W'] views."""
        if packed.shape[2] % self.num_layers:
            raise ValueError(f"time axis {packed.shape[2]} is not a multiple of {self.num_layers} layers")
        return dict(zip(self.names, packed.chunk(self.num_layers, dim=2)))

    def per_layer(self, values: torch.Tensor, frames_per_layer: int) -> torch.Tensor:
        """[B, L] per-layer values -> [B, L*frames_per_layer] along the packed time axis."""
        return values.repeat_interleave(frames_per_layer, dim=1)
