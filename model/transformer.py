"""The layered DiT: diffusers' Wan transformer, extended through its own hooks.

Reading order: the backbone runs unchanged on the packed sequence [full | bg | fg_k | alpha_k]
(see layout.py), with one twist that makes everything else cheap: inside the blocks a sample's
L layers travel as L batch rows [B*L, n, D] instead of one row [B, L*n, D] (the same memory,
a view). Then each layer is an ordinary batch row to Wan's AdaLN, so

1. per-layer timesteps are Wan's plain per-sample timesteps of the B*L rows, and LayerAdaLN
   (a zero-initialised [layer types, 6, dim] table) is added to each row's modulation by a
   forward hook on the condition embedder: a [6, dim] vector per layer, never a per-token
   tensor (which would cost ~1.5x the activation memory);
2. the attention processors (attention.py) join the rows where tokens meet: self-attention
   over all layers at once, and layer-aware cross-attention with per-layer prompt routing;
3. positions: a forward hook on the backbone's RoPE swaps in a variant (positions.py).

Nothing in diffusers is copied; with the table at zero, routing off and one timestep for
all layers, the output is the backbone's own.

Two switches exist for ablations: `layer_adaln=False` leaves the modulation as the backbone's
(the table is then neither used nor trained), and `joint_attention=False` keeps self-attention
within each layer's row, so every layer is denoised on its own trajectory and the layers share
only the weights (and the prompts they are routed): the independent-generation baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
from accelerate import init_empty_weights
from diffusers import ConfigMixin, ModelMixin, WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from torch import nn

from .layout import Layout, LayerType
from .positions import POSITION_MODES, PositionMode, rotary_frequencies
from .attention import LayerRoutedAttnProcessor, LayerSelfAttnProcessor, LayerState, route_groups

# The paper puts LoRA on all linear layers of the DiT blocks.
LORA_TARGETS = r".*blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|.*blocks\.\d+\.ffn\.net\.(0\.proj|2)"
LAYER_WEIGHTS = "layer_weights.safetensors"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class _LayerCall:
    """What the hooks need to know about the forward pass in flight."""

    layout: Layout
    grid: tuple[int, int, int]

    @property
    def tokens_per_layer(self) -> int:
        return math.prod(self.grid)


class LayeredWanTransformer(ModelMixin, ConfigMixin):
    """LayerT2V's transformer: `WanTransformer3DModel` + LayerAdaLN + prompt routing + position variants."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        backbone_config: dict[str, Any],
        num_layer_types: int = len(LayerType),
        positions: PositionMode = "concat",
        layer_routing: bool = True,
        layer_adaln: bool = True,
        joint_attention: bool = True,
    ) -> None:
        super().__init__()
        if positions not in POSITION_MODES:
            raise ValueError(f"unknown position mode {positions!r}; choose one of {POSITION_MODES}")
        self.backbone = WanTransformer3DModel.from_config(backbone_config)
        # Zero init: at step 0 every layer gets exactly the backbone's modulation, so training
        # starts from the pretrained model's behaviour and learns layer identity as a residual.
        self.layer_modulation = nn.Parameter(torch.zeros(num_layer_types, 6, self.inner_dim))
        self.layer_state = LayerState()
        self._call: _LayerCall | None = None
        self._attach()

    @classmethod
    def from_backbone(cls, backbone: WanTransformer3DModel, **options: Any) -> LayeredWanTransformer:
        """Wrap an already loaded Wan transformer (e.g. a Wan2.1 checkpoint) without copying its weights."""
        config = {k: v for k, v in backbone.config.items() if not k.startswith("_")}
        with init_empty_weights():
            model = cls(backbone_config=config, **options)
        model.backbone = backbone
        model.layer_modulation = nn.Parameter(torch.zeros(model.layer_modulation.shape, device=backbone.device))
        model._attach()
        return model

    @classmethod
    def from_wan(cls, path: str | Path, subfolder: str = "transformer", torch_dtype: torch.dtype | None = None,
                 **options: Any) -> LayeredWanTransformer:
        """Load a diffusers-format Wan checkpoint from a local folder and make it layered."""
        backbone = WanTransformer3DModel.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype,
                                                         local_files_only=True)
        return cls.from_backbone(backbone, **options)

    @property
    def inner_dim(self) -> int:
        cfg = self.backbone.config
        return cfg.num_attention_heads * cfg.attention_head_dim

    def _attach(self) -> None:
        for block in self.backbone.blocks:
            # Without joint attention each [B*L] row is its own sequence, which is just what Wan's
            # processor attends over: no token meets another layer's.
            block.attn1.set_processor(LayerSelfAttnProcessor(self.layer_state) if self.config.joint_attention
                                      else WanAttnProcessor())
            block.attn2.set_processor(LayerRoutedAttnProcessor(self.layer_state))
        self.backbone.condition_embedder.register_forward_hook(self._layer_modulation_hook)
        self.backbone.rope.register_forward_hook(self._positions_hook)
        self.backbone.blocks[0].register_forward_pre_hook(self._layer_rows_hook)

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        layout: Layout,
    ) -> torch.Tensor:
        """Predict the flow velocity of a packed sample.

        latents: [B, C, L*T', H', W'] packed by `layout`; timesteps: [B] (one trajectory) or
        [B, L] (per layer; 0 marks a clean conditioning layer); prompt_embeds: [B, P, S, D]
        with P = layout.num_prompts prompts of S tokens each.
        """
        batch, _, frames, height, width = latents.shape
        if frames % layout.num_layers:
            raise ValueError(f"{frames} latent frames do not split into {layout.num_layers} layers")
        if prompt_embeds.ndim != 4 or prompt_embeds.shape[1] != layout.num_prompts:
            raise ValueError(f"prompt_embeds must be [B, {layout.num_prompts}, S, D], got {tuple(prompt_embeds.shape)}")
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None].expand(batch, layout.num_layers)
        if timesteps.shape != (batch, layout.num_layers):
            raise ValueError(f"timesteps must be [B] or [B, {layout.num_layers}], got {tuple(timesteps.shape)}")
        p_t, p_h, p_w = self.backbone.config.patch_size
        call = _LayerCall(layout, (frames // layout.num_layers // p_t, height // p_h, width // p_w))
        groups = route_groups(layout, call.tokens_per_layer, prompt_embeds.shape[2]) if self.config.layer_routing \
            else None
        self._call = call
        try:
            with self.layer_state.using(layout.num_layers, groups):
                return self.backbone(latents, timesteps.flatten(), prompt_embeds.flatten(1, 2), return_dict=False)[0]
        finally:
            self._call = None

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Callable | None = None) -> None:
        """Checkpointed blocks are replayed in backward, after `forward` has returned: they must
        replay with the layer state of the forward they belong to."""
        checkpoint = gradient_checkpointing_func or partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
        state = self.layer_state

        def checkpoint_with_layers(block: nn.Module, *args: Any) -> Any:
            num_layers, groups = state.num_layers, state.groups

            def replay(*inputs: Any) -> Any:
                with state.using(num_layers, groups):
                    return block(*inputs)

            return checkpoint(replay, *args)

        super().enable_gradient_checkpointing(checkpoint_with_layers)

    def _layer_modulation_hook(self, module: nn.Module, args: tuple, output: tuple) -> tuple:
        """LayerAdaLN: add each layer type's [6, D] row to the modulation of its [B*L] rows."""
        if self._call is None or not self.config.layer_adaln:
            return output
        temb, modulation, text, image = output
        types = torch.tensor(self._call.layout.types, device=modulation.device)
        table = self.layer_modulation[types].flatten(1).to(modulation.dtype)
        modulation = (modulation.unflatten(0, (-1, len(types))) + table).flatten(0, 1)
        return temb, modulation, text, image

    def _layer_rows_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        """[B, L*n, D] -> [B*L, n, D] before the first block; the backbone's final reshape undoes it.

        Reads the layer state, not the call: checkpointed blocks replay after the call is over.
        """
        layers = self.layer_state.num_layers
        if layers == 1:
            return None
        hidden, *rest = args
        return (hidden.reshape(hidden.shape[0] * layers, -1, hidden.shape[-1]), *rest)

    def _positions_hook(self, module: nn.Module, args: tuple, output: tuple) -> tuple:
        """Swap in the configured position variant; without joint attention, one layer's positions.

        A row then attends only within itself, and RoPE scores depend on position differences
        alone: a layer's own positions and layer 0's differ by a constant (the concat time offset,
        the 4d layer index), which cancels. So layer 0's [1, n] table serves every row as its own
        and broadcasts over the B*L rows without a copy. Per row, concat and aligned are then the
        backbone's positions for a one-layer video; 4d differs only in spending its layer-axis
        channels on a position that cancels.
        """
        if self._call is None:
            return output
        cos, sin = output
        if self.config.positions != "concat":
            cos, sin = rotary_frequencies(
                self.config.positions, self.backbone.config.attention_head_dim, self._call.layout.num_layers,
                self._call.grid, device=cos.device,
            )
            cos, sin = cos.to(output[0].dtype), sin.to(output[1].dtype)
        if not self.config.joint_attention:
            cos, sin = cos[:, :self._call.tokens_per_layer], sin[:, :self._call.tokens_per_layer]
        return cos, sin

    # LoRA and the small layer weights, saved apart from the (frozen) backbone.

    def add_lora(self, rank: int, alpha: float | None = None, targets: str = LORA_TARGETS) -> None:
        """peft LoRA on the backbone's block linears (B zero-initialised: a no-op at start)."""
        config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, init_lora_weights=True)
        self.backbone.add_adapter(config)

    @property
    def has_lora(self) -> bool:
        return bool(getattr(self.backbone, "peft_config", None))

    def save_layer_weights(self, folder: str | Path) -> None:
        """LayerAdaLN table (+ the LoRA adapter when present) as safetensors, for adapter-style checkpoints."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"layer_modulation": self.layer_modulation.detach().float().cpu().contiguous()},
                  folder / LAYER_WEIGHTS)
        if self.has_lora:
            self.backbone.save_lora_adapter(folder, weight_name=LORA_WEIGHTS)

    def load_layer_weights(self, folder: str | Path) -> None:
        folder = Path(folder)
        table = load_file(folder / LAYER_WEIGHTS)["layer_modulation"]
        with torch.no_grad():
            self.layer_modulation.copy_(table)
        if (folder / LORA_WEIGHTS).exists():
            if self.has_lora:
                self.backbone.delete_adapters("default")
            self.backbone.load_lora_adapter(folder, prefix=None, adapter_name="default", weight_name=LORA_WEIGHTS,
                                            use_safetensors=True, local_files_only=True)
