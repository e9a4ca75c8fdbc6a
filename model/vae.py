"""The frozen Wan 2.1 VAE applied to each layer, plus the trainable adapter that lets it carry alpha mattes.

RGB layers (full, background, foreground) go through the native VAE. Alpha mattes go either through the VAE behind
a learned project-in block, with an optional LoRA on the decoder (`alpha_mode="vae"`, the paper's choice), or are
simply area-downsampled to the latent grid (`alpha_mode="downsample"`, an ablation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from diffusers.utils.peft_utils import set_adapter_layers
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners import lora
from safetensors.torch import load_file, save_file
from torch import nn

AlphaMode = Literal["vae", "downsample"]

ADAPTER_WEIGHTS = "alpha_adapter.safetensors"
ADAPTER_CONFIG = "alpha_adapter.json"
LORA_ADAPTER_NAME = "alpha"


class AlphaProjectIn(nn.Module):
    """Maps an alpha matte [B, 1, T, H, W] in [0, 1] to the 3-channel [-1, 1] input of the Wan encoder.

    Output = the plain grey-video mapping (2a - 1 on every channel) + a learned residual. The residual is per frame
    (1x3x3 kernels), so it cannot leak later frames into Wan's causal time chunks.
    """

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv3d(1, hidden, (1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),
            nn.Conv3d(hidden, 3, (1, 3, 3), padding=(0, 1, 1)),
        )
        # Zero init: the block starts as exactly the native grey-video baseline and only training moves it away.
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        grey = 2 * alpha - 1
        return grey.expand(-1, 3, -1, -1, -1) + self.residual(grey)


def _causal_pad(conv: WanCausalConv3d, x: torch.Tensor, cache_x: torch.Tensor | None) -> torch.Tensor:
    """The input `conv` really convolves: mirrors WanCausalConv3d.forward (frame cache, then causal zero padding)."""
    padding = list(conv._padding)
    if cache_x is not None and padding[4] > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)
        padding[4] -= cache_x.shape[2]
    return F.pad(x, padding)


class CausalConv3dLora(lora.Conv3d):
    """peft LoRA for diffusers' WanCausalConv3d, registered through `LoraConfig._register_custom_module`.

    Stock `lora.Conv3d` cannot wrap it: it builds lora_A as `type(base_layer)(..., bias=False)`, which
    WanCausalConv3d does not accept, and would feed lora_A the unpadded input without the frame cache (the causal
    conv pads inside forward and has `padding` reset to 0). Here lora_A is a plain unpadded Conv3d with the base
    kernel and stride, run on exactly the padded, cache-extended input the base conv sees, so the update is exact.
    """

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs) -> None:
        if config.use_dora or config.lora_bias or not isinstance(config.init_lora_weights, bool) or r <= 0:
            raise ValueError("CausalConv3dLora supports plain LoRA only (r > 0, no DoRA, no bias, default init)")
        base = self.get_base_layer()
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / (r**0.5 if config.use_rslora else r)
        self.use_rslora[adapter_name] = config.use_rslora
        self.use_dora[adapter_name] = False
        self.lora_bias[adapter_name] = False
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        self.lora_A[adapter_name] = nn.Conv3d(self.in_features, r, base.kernel_size, base.stride, bias=False)
        self.lora_B[adapter_name] = nn.Conv3d(r, self.out_features, 1, bias=False)
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        # peft's 1x1 shortcut tests kernel dims 2:4 only, which misfires on (k, 1, 1) kernels; the general form holds
        # for every kernel because lora_B is 1x1x1.
        weight_a, weight_b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return F.conv3d(weight_a.transpose(0, 1), weight_b).transpose(0, 1) * self.scaling[adapter]

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(x, cache_x)
        if self.disable_adapters or self.merged:
            return result
        padded = _causal_pad(self.get_base_layer(), x, cache_x)
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            h = lora_a(self.lora_dropout[name](self._cast_input_dtype(padded, lora_a.weight.dtype)))
            result = result + (lora_b(h) * self.scaling[name]).to(result.dtype)
        return result


class LayerVAE(nn.Module):
    """Encodes and decodes one layer at a time: RGB videos [B, 3, T, H, W] in [-1, 1], alpha [B, 1, T, H, W] in [0, 1].

    Latents are [B, 16, (T - 1) / 4 + 1, H / 8, W / 8], normalised with the checkpoint's `latents_mean` and
    `latents_std` the way WanPipeline expects them. The Wan VAE is frozen; only the alpha adapter (project-in block
    and decoder LoRA, see `trainable_parameters`) learns. No method disables autograd: gradients must reach the
    project-in block through the frozen encoder, so callers wrap inference in `torch.no_grad()` themselves.
    """

    def __init__(self, vae: AutoencoderKLWan, alpha_mode: AlphaMode = "vae", project_in_hidden: int = 16) -> None:
        super().__init__()
        if alpha_mode not in ("vae", "downsample"):
            raise ValueError(f"alpha_mode must be 'vae' or 'downsample', got {alpha_mode!r}")
        self.vae = vae.eval().requires_grad_(False)
        self.alpha_mode = alpha_mode
        self.project_in_hidden = project_in_hidden
        self.project_in = AlphaProjectIn(project_in_hidden).to(vae.dtype) if alpha_mode == "vae" else None
        self.lora_rank: int | None = None
        self.lora_alpha: int | None = None
        stats = {"latents_mean": vae.config.latents_mean, "latents_std": vae.config.latents_std}
        for name, values in stats.items():
            self.register_buffer(name, torch.tensor(values).view(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        subfolder: str = "vae",
        alpha_mode: AlphaMode = "vae",
        dtype: torch.dtype = torch.float32,
    ) -> LayerVAE:
        """Load the VAE of a local diffusers-format Wan folder; safetensors only, so no pickle is unpickled."""
        vae = AutoencoderKLWan.from_pretrained(
            path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True, use_safetensors=True
        )
        return cls(vae, alpha_mode)

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    @property
    def _factors(self) -> tuple[int, int]:
        return self.vae.config.scale_factor_temporal, self.vae.config.scale_factor_spatial

    def _check_clip(self, x: torch.Tensor, channels: int) -> None:
        t, s = self._factors
        if x.ndim != 5 or x.shape[1] != channels:
            raise ValueError(f"expected [B, {channels}, T, H, W], got {tuple(x.shape)}")
        frames, height, width = x.shape[2:]
        if (frames - 1) % t or height % s or width % s:
            raise ValueError(f"need T = {t}n + 1 frames and H, W multiples of {s}, got {tuple(x.shape)}")

    def encode_video(
        self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Normalised latents of an RGB video: the posterior mode (reproducible), or a sample if `sample`."""
        self._check_clip(video, 3)
        posterior = self.vae.encode(video.to(self.vae.dtype)).latent_dist
        z = posterior.sample(generator) if sample else posterior.mode()
        return (z - self.latents_mean.to(z)) / self.latents_std.to(z)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype)
        return self.vae.decode(z * self.latents_std.to(z) + self.latents_mean.to(z)).sample

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """RGB video in [-1, 1] (Wan clamps) from normalised latents, always through the native decoder."""
        with self._native_decoder():
            return self._decode(latents)

    @contextmanager
    def _native_decoder(self) -> Iterator[None]:
        # The decoder LoRA is trained on mattes only, so RGB layers bypass it.
        if self.lora_rank is None:
            yield
            return
        set_adapter_layers(self.vae.decoder, enabled=False)
        try:
            yield
        finally:
            set_adapter_layers(self.vae.decoder, enabled=True)

    def encode_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        """Latents of an alpha matte, the same shape as `encode_video` gives for a video of that size."""
        self._check_clip(alpha, 1)
        if self.alpha_mode == "downsample":
            return self._downsample(alpha)
        return self.encode_video(self.project_in(alpha.to(self.vae.dtype)))

    def encode_layer(self, name: str, video: torch.Tensor) -> torch.Tensor:
        """Latents of a layer named as in `Layout.names`: mattes through the alpha path, the rest as RGB videos."""
        video = video.to(self.latents_mean.device, self.vae.dtype)
        return self.encode_alpha(video) if name.startswith("alpha") else self.encode_video(video)

    def decode_alpha(self, latents: torch.Tensor) -> torch.Tensor:
        """Alpha matte [B, 1, T, H, W] in [0, 1]: the grey decoded video (with the LoRA, if added) mapped back."""
        if self.alpha_mode == "downsample":
            return self._upsample(latents)
        return (self._decode(latents).mean(1, keepdim=True) + 1) / 2

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """Alpha through the adapter and back: what stage 1 trains, as `forward` so DDP syncs its gradients."""
        return self.decode_alpha(self.encode_alpha(alpha))

    def _downsample(self, alpha: torch.Tensor) -> torch.Tensor:
        """Area-average alpha over each latent cell: Wan's causal time grouping (first frame alone, then groups of
        4) times 8x8 pixels; map to [-1, 1] and replicate over the latent channels.

        Lossy on purpose: it is the ablation baseline, and detail finer than a cell cannot survive it.
        """
        t, s = self._factors
        # Repeating the first frame t - 1 times makes it a cell of its own.
        alpha = torch.cat([alpha[:, :, :1].expand(-1, -1, t - 1, -1, -1), alpha], dim=2)
        cells = F.avg_pool3d(alpha, (t, s, s))
        return (2 * cells - 1).repeat(1, self.z_dim, 1, 1, 1)

    def _upsample(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `_downsample` up to its loss: channel mean, then nearest upsampling (first latent frame to 1
        frame, every other to 4)."""
        t, s = self._factors
        cells = (latents.mean(1, keepdim=True) + 1) / 2
        alpha = F.interpolate(cells, scale_factor=(t, s, s), mode="nearest")[:, :, t - 1 :]
        return alpha.clamp(0, 1)

    def add_decoder_lora(self, rank: int = 128, alpha: int | None = None) -> None:
        """Add a LoRA (zero-initialised B, so decoding is unchanged until trained) to every conv of the Wan decoder.

        Targets: every WanCausalConv3d (conv_in, conv_out, the resnet convs and shortcuts, the temporal upsampling
        convs) through `CausalConv3dLora`, and every nn.Conv2d (spatial upsampling convs, mid-block attention
        to_qkv and proj) through peft's stock Conv2d LoRA, which is exact for them. `alpha` defaults to `rank`.
        """
        if self.alpha_mode != "vae":
            raise ValueError("the decoder LoRA only exists for alpha_mode='vae'")
        if self.lora_rank is not None:
            raise RuntimeError("the decoder LoRA was already added")
        alpha = rank if alpha is None else alpha
        targets = [n for n, m in self.vae.decoder.named_modules() if isinstance(m, (WanCausalConv3d, nn.Conv2d))]
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets)
        config._register_custom_module({WanCausalConv3d: CausalConv3dLora})
        inject_adapter_in_model(config, self.vae.decoder, adapter_name=LORA_ADAPTER_NAME)
        self.vae.decoder.register_forward_hook(_straight_through_clamp)
        self.lora_rank, self.lora_alpha = rank, alpha

    def _adapter_state(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if n.startswith("project_in.") or ".lora_" in n}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The alpha adapter: project-in block and decoder LoRA. Everything else is the frozen Wan VAE."""
        return list(self._adapter_state().values())

    def _adapter_config(self) -> dict:
        return {
            "alpha_mode": self.alpha_mode,
            "project_in_hidden": self.project_in_hidden,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
        }

    def save_adapter(self, path: str | Path) -> None:
        """Write the adapter weights (safetensors) and its shape config (json) to the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().contiguous() for n, p in self._adapter_state().items()}, path / ADAPTER_WEIGHTS)
        (path / ADAPTER_CONFIG).write_text(json.dumps(self._adapter_config(), indent=2) + "\n")

    def load_adapter(self, path: str | Path) -> None:
        """Load what `save_adapter` wrote, adding the decoder LoRA first if the adapter has one."""
        path = Path(path)
        config = json.loads((path / ADAPTER_CONFIG).read_text())
        if config["lora_rank"] is not None and self.lora_rank is None and self.alpha_mode == config["alpha_mode"]:
            self.add_decoder_lora(config["lora_rank"], config["lora_alpha"])
        if config != self._adapter_config():
            raise ValueError(f"adapter {config} does not fit this LayerVAE {self._adapter_config()}")
        weights = load_file(path / ADAPTER_WEIGHTS)
        expected = self._adapter_state().keys()
        if weights.keys() != expected:
            raise ValueError(
                f"adapter weights mismatch: missing {sorted(expected - weights.keys())}, "
                f"unexpected {sorted(weights.keys() - expected)}"
            )
        self.load_state_dict(weights, strict=False)


def _straight_through_clamp(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Wan clamps decoded videos to [-1, 1]. A matte pixel pushed past the bound while training would
    get no gradient and stay dead (the adapter collapses to an all-zero matte), so the clamped value is
    kept but its gradient passes straight through."""
    if not torch.is_grad_enabled():
        return output
    return output - (output - output.clamp(-1, 1)).detach()


def tiny_vae_config() -> dict:
    """A small AutoencoderKLWan config with Wan 2.1's 4x time / 8x space compression and 16 latent channels."""
    return {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 2, 2],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
    }


def write_tiny_vae(path: Path, seed: int = 0) -> None:
    """Write a random tiny Wan VAE to `path / "vae"`, loadable by `LayerVAE.from_pretrained(path)`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**tiny_vae_config())
    vae.save_pretrained(Path(path) / "vae", safe_serialization=True)
