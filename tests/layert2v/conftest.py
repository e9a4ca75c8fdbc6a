"""Tiny models, built once per session and loaded back by path like a user's local checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layert2v.presets import PRESETS, write_tiny_checkpoint
from layert2v.transformer import LayeredWanTransformer

TINY = PRESETS["tiny"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A complete tiny Wan folder: transformer/, vae/, text_encoder/, tokenizer/."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-wan"))


def _tiny_transformer(seed: int = 0, **options) -> LayeredWanTransformer:
    torch.manual_seed(seed)
    return LayeredWanTransformer(backbone_config=TINY.transformer, **options)


def _random_inputs(model: LayeredWanTransformer, layout, batch: int = 2, frames: int = 3, size: int = 8,
                   text_len: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.backbone.config
    latents = torch.randn(batch, cfg.in_channels, layout.num_layers * frames, size, size, generator=g)
    timesteps = torch.rand(batch, generator=g) * 1000
    prompts = torch.randn(batch, layout.num_prompts, text_len, cfg.text_dim, generator=g)
    return latents, timesteps, prompts


@pytest.fixture
def tiny_transformer():
    """Factory: a randomly initialised tiny LayeredWanTransformer (seed, **options)."""
    return _tiny_transformer


@pytest.fixture
def random_inputs():
    """Factory: packed latents [B, C, L*T', H', W'], timesteps [B] and prompts [B, P, S, D] for a model."""
    return _random_inputs
