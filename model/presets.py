"""Model presets: the tiny CPU model and the Wan2.1 configurations.

`tiny` is randomly initialised and written to disk in the same diffusers folder layout as a
real Wan checkpoint (transformer/, vae/, text_encoder/, tokenizer/), so tests and demos load
it through exactly the code path a user's local Wan2.1 folder takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import WanTransformer3DModel

from .text import write_tiny_text_encoder
from .vae import write_tiny_vae


@dataclass(frozen=True)
class Preset:
    """A backbone configuration and the text length its prompts are padded to."""

    name: str
    transformer: dict[str, Any]
    text_length: int
    description: str = ""


_WAN_COMMON = dict(
    patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)

_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
             text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", _TINY, text_length=16,
        description="random init, CPU-sized; for tests, demos and smoke runs",
    ),
    "toy": Preset(
        "toy", dict(_TINY, num_attention_heads=4, freq_dim=64, ffn_dim=512, num_layers=4), text_length=32,
        description="random init, trained from scratch on `vidlayer synth --toy` (see layert2v.toy_base)",
    ),
    "wan2.1-t2v-1.3b": Preset(
        "wan2.1-t2v-1.3b", dict(_WAN_COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30), text_length=512,
        description="Wan2.1-T2V-1.3B; load weights from a local diffusers folder",
    ),
    "wan2.1-t2v-14b": Preset(
        "wan2.1-t2v-14b", dict(_WAN_COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40), text_length=512,
        description="Wan2.1-T2V-14B; load weights from a local diffusers folder",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def random_backbone(name: str, dtype: torch.dtype = torch.float32) -> WanTransformer3DModel:
    """A preset's Wan transformer with random weights (benchmarks, tests)."""
    model = WanTransformer3DModel(**get_preset(name).transformer)
    return model if dtype == torch.float32 else model.to(dtype)


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a complete tiny Wan folder (transformer, vae, text encoder, tokenizer) and return it."""
    path = Path(path)
    torch.manual_seed(seed)
    random_backbone("tiny").save_pretrained(path / "transformer")
    write_tiny_vae(path, seed=seed)
    write_tiny_text_encoder(path, seed=seed)
    return path
