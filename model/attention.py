"""Attention processors for a packed layer sequence.

Inside the blocks a sample's L layers travel as L batch rows [B*L, n, D] (see transformer.py),
so each layer is modulated by a [6, D] vector rather than a per-token tensor. The processors
join the rows back into one sequence [B, L*n, D] where tokens must meet:

- self-attention: Wan's own processor over all layers' tokens together;
- cross-attention, layer-aware: the text context is the concatenation of per-slot prompts
  [full | background | fg_0 | ...], each `prompt_len` tokens, and each layer's tokens read only
  the prompts it may see. Layers are contiguous along the sequence, so routing is a handful of
  attention calls over slices, one per group of layers sharing a visibility set; no
  [visual x text] mask is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor, _get_qkv_projections

from .layout import Layout


@dataclass(frozen=True)
class RouteGroup:
    """A contiguous run of query tokens and the prompt-token slices its layers may attend to."""

    queries: slice
    keys: tuple[slice, ...]


def route_groups(layout: Layout, tokens_per_layer: int, prompt_len: int) -> tuple[RouteGroup, ...]:
    """Merge adjacent layers with the same visibility (fg_k and alpha_k) into one group."""
    groups: list[RouteGroup] = []
    for layer in range(layout.num_layers):
        prompts = layout.visible_prompts(layer)
        start = layer * tokens_per_layer
        if groups and groups[-1].keys == _prompt_slices(prompts, prompt_len):
            groups[-1] = RouteGroup(slice(groups[-1].queries.start, start + tokens_per_layer), groups[-1].keys)
        else:
            groups.append(RouteGroup(slice(start, start + tokens_per_layer), _prompt_slices(prompts, prompt_len)))
    return tuple(groups)


def _prompt_slices(prompts: tuple[int, ...], prompt_len: int) -> tuple[slice, ...]:
    """Token slices of the given prompt slots, with adjacent slots merged into one slice."""
    slices: list[slice] = []
    for p in prompts:
        if slices and slices[-1].stop == p * prompt_len:
            slices[-1] = slice(slices[-1].start, (p + 1) * prompt_len)
        else:
            slices.append(slice(p * prompt_len, (p + 1) * prompt_len))
    return tuple(slices)


class LayerState:
    """The call in flight, shared by every block's processors: layers per sample and route groups.

    Outside a layered call it is one layer and no routing, so the backbone run on its own
    computes exactly what diffusers' processors compute.
    """

    def __init__(self) -> None:
        self.num_layers = 1
        self.groups: tuple[RouteGroup, ...] | None = None

    @contextmanager
    def using(self, num_layers: int, groups: tuple[RouteGroup, ...] | None) -> Iterator[None]:
        saved = self.num_layers, self.groups
        self.num_layers, self.groups = num_layers, groups
        try:
            yield
        finally:
            self.num_layers, self.groups = saved

    def join(self, rows: torch.Tensor) -> torch.Tensor:
        """[B*L, n, D] layer rows -> [B, L*n, D] sequences (a view)."""
        return rows.reshape(rows.shape[0] // self.num_layers, -1, rows.shape[-1])


class LayerSelfAttnProcessor(WanAttnProcessor):
    """Wan's self-attention, run over all layers of a sample at once."""

    def __init__(self, state: LayerState) -> None:
        super().__init__()
        self.state = state

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        out = super().__call__(attn, self.state.join(hidden_states), encoder_hidden_states, attention_mask, rotary_emb)
        return out.reshape(hidden_states.shape)


class LayerRoutedAttnProcessor:
    """Drop-in for Wan's cross-attention processor (same projections, norms and output).

    With no active routing it is exactly dense cross-attention, so the base model's
    behaviour is one switch away.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: LayerState) -> None:
        self.state = state

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if attn.add_k_proj is not None or attention_mask is not None:
            raise NotImplementedError("layer routing supports text-only (T2V) Wan cross-attention without masks")
        rows = hidden_states.shape
        query, key, value = _get_qkv_projections(attn, self.state.join(hidden_states), encoder_hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))

        groups = self.state.groups or (RouteGroup(slice(0, query.shape[1]), (slice(0, key.shape[1]),)),)
        if groups[-1].queries.stop != query.shape[1]:
            raise ValueError(f"routing covers {groups[-1].queries.stop} tokens, the sequence has {query.shape[1]}")
        out = torch.cat([self._attend(query[:, g.queries], key, value, g.keys) for g in groups], dim=1)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out)).reshape(rows)

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        keys: tuple[slice, ...],
    ) -> torch.Tensor:
        if len(keys) == 1:
            key, value = key[:, keys[0]], value[:, keys[0]]
        else:
            key = torch.cat([key[:, s] for s in keys], dim=1)
            value = torch.cat([value[:, s] for s in keys], dim=1)
        return dispatch_attention_fn(
            query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, backend=self._attention_backend
        )
