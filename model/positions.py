"""Rotary positions for a packed layer sequence: three variants, selectable for ablations.

- `concat`: the backbone's own 3D RoPE over the packed time axis; positions simply continue
  from one layer into the next (the reference implementation's default).
- `aligned`: every layer restarts time at 0, so frame t of the background and frame t of the
  foreground share a temporal position; layers are told apart by LayerAdaLN and prompts.
- `4d`: a fourth rotary axis for the layer index (layer, t, h, w). The paper splits a 128-wide
  head 8/42/40/38; here the layer axis takes head/16 channels and the rest follows Wan's own
  t/h/w rule (8/40/40/40 for 128), and it reports this variant entangles layer and time.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed

PositionMode = Literal["concat", "aligned", "4d"]
POSITION_MODES: tuple[str, ...] = ("concat", "aligned", "4d")


def axis_split(head_dim: int, with_layer_axis: bool) -> list[int]:
    """Channels per rotary axis: [t, h, w] as in Wan, or [layer, t, h, w]."""
    layer = 2 * max(1, head_dim // 32) if with_layer_axis else 0
    rest = head_dim - layer
    h = w = 2 * (rest // 6)
    split = [rest - h - w, h, w]
    return [layer, *split] if with_layer_axis else split


def rotary_frequencies(
    mode: PositionMode,
    head_dim: int,
    num_layers: int,
    grid: tuple[int, int, int],
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [1, tokens, 1, head_dim], for `num_layers` layers of a (t, h, w) token grid.

    Token order matches the backbone's flattening: layer, then t, then h, then w.
    """
    if mode not in POSITION_MODES:
        raise ValueError(f"unknown position mode {mode!r}; choose one of {POSITION_MODES}")
    frames, height, width = grid
    layer, t, h, w = torch.meshgrid(
        torch.arange(num_layers), torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"
    )
    if mode == "concat":
        axes = [layer * frames + t, h, w]
    elif mode == "aligned":
        axes = [t, h, w]
    else:
        axes = [layer, t, h, w]
    dims = axis_split(head_dim, with_layer_axis=mode == "4d")
    cos, sin = zip(
        *(
            get_1d_rotary_pos_embed(dim, pos.flatten().double(), theta, use_real=True, freqs_dtype=torch.float64)
            for dim, pos in zip(dims, axes)
        )
    )
    shape = (1, -1, 1, head_dim)
    return torch.cat(cos, dim=-1).reshape(shape).to(device), torch.cat(sin, dim=-1).reshape(shape).to(device)
