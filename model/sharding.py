"""FSDP for the DiT: Wan2.1-14B with its optimizer state does not fit one GPU.

PyTorch's FSDP2 (`fully_shard`) shards every Wan block, then the rest of the model, over all
processes; each process keeps 1/N of every parameter, gradient and optimizer moment and
gathers a block's weights only while that block runs. It works on CPU (gloo) as well, which
is how the tests check it.

Checkpoints and exports hold full tensors, gathered one parameter at a time and kept by the
main process only, so a sharded run writes the same files as a DDP run.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from .transformer import LayeredWanTransformer

logger = logging.getLogger(__name__)


def shard_transformer(model: LayeredWanTransformer, device: torch.device, mixed_precision: str) -> None:
    """Shard `model` (still on CPU) over all processes onto `device`.

    One process has nothing to shard with: the model just moves to the device.
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world == 1:
        logger.info("FSDP with one process is plain training")
        model.to(device)
        return
    mesh = init_device_mesh(device.type, (world,))
    # bf16 compute, fp32 gradient reduction; the sharded master weights stay fp32.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    for block in model.backbone.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    logger.info("FSDP: the DiT is sharded over %d processes", world)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a shard is all-gathered (a collective: every process must call it)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gather(tree: Any) -> Any:
    """A nested dict/list with every sharded tensor replaced by the whole tensor, on CPU."""
    if isinstance(tree, DTensor):
        return tree.full_tensor().cpu()
    if isinstance(tree, dict):
        return {k: gather(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(gather(v) for v in tree)
    return tree


def placed_like(saved: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """A whole saved tensor on `current`'s device, and cut like it when `current` is a shard."""
    if isinstance(current, DTensor):
        return distribute_tensor(saved.to(current.dtype), current.device_mesh, current.placements)
    return saved.to(current.device, current.dtype)


def shard_optimizer_state(saved: dict[str, Any], params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """Cut a gathered optimizer state dict (params by index) back into this process's shards."""
    state = {index: {key: placed_like(value, params[int(index)]) if _is_moment(value, params[int(index)]) else value
                     for key, value in moments.items()}
             for index, moments in saved["state"].items()}
    return {**saved, "state": state}


def _is_moment(value: Any, param: torch.Tensor) -> bool:
    """A per-element optimizer state like Adam's moments (not its scalar step count)."""
    return isinstance(value, torch.Tensor) and value.shape == param.shape


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def unsharded_copy(model: LayeredWanTransformer, is_main_process: bool) -> LayeredWanTransformer | None:
    """The main process gets an unsharded copy of `model` holding its trained weights (a collective).

    Only trainable weights are gathered; frozen ones stay on the meta device, since exports
    (LayerAdaLN + LoRA, or a fully fine-tuned model, where everything is trainable) never write them.
    """
    trained = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            whole = full_tensor(param.detach())
            if is_main_process:
                trained[name] = whole.cpu()
    if not is_main_process:
        return None
    with torch.device("meta"):
        plain = LayeredWanTransformer.from_config(model.config)
        if model.has_lora:
            plain.backbone.add_adapter(copy.deepcopy(model.backbone.peft_config["default"]))
    plain.load_state_dict(trained, strict=False, assign=True)
    return plain
