"""Where a model stage runs: the GPU Ray gave its worker, or the CPU where there is none."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes the first visible GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this worker sees no GPU")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on GPUs (half the memory, same range as fp32), fp32 on CPUs (bf16 is slow there)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not one of auto, {', '.join(dtypes)}")
    return dtypes[name]
