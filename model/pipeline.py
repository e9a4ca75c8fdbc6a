"""Text (and optionally given layers) in, an editable layered video out.

Loads from one local folder in diffusers' Wan layout (transformer/, vae/, text_encoder/,
tokenizer/); `transformer/` may hold a plain Wan transformer (made layered on load) or a
saved `LayeredWanTransformer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vidlayer.io.video import decode_video, encode_video
from vidlayer.layers import composite
from vidlayer.render import contact_sheet, layer_rows, save_png

from .flow import make_scheduler, sample_latents
from .layout import Layout, LayerType
from .presets import get_preset
from .runs import run_provenance
from .text import TextEncoder
from .transformer import LayeredWanTransformer
from .vae import LayerVAE

TEMPORAL_COMPRESSION, SPATIAL_COMPRESSION = 4, 8


@dataclass(frozen=True)
class LayerPrompts:
    """One prompt per slot: the full scene, the background, and each foreground (top first).

    `negative` is one negative prompt for every slot, or one per slot in the same order.
    """

    full: str
    background: str
    foregrounds: tuple[str, ...]
    negative: str | tuple[str, ...] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.negative, str) and len(self.negative) != 2 + len(self.foregrounds):
            raise ValueError(f"{len(self.negative)} negative prompts for {2 + len(self.foregrounds)} prompt slots")

    @property
    def layout(self) -> Layout:
        return Layout(len(self.foregrounds))

    def slots(self) -> list[str]:
        return [self.full, self.background, *self.foregrounds]

    def negative_slots(self) -> list[str]:
        return [self.negative] * len(self.slots()) if isinstance(self.negative, str) else list(self.negative)


@dataclass
class LayeredVideo:
    """Decoded layers as float frames in [0, 1]: colour [T, H, W, 3], alpha [T, H, W]."""

    layers: dict[str, np.ndarray]
    fps: float
    prompts: LayerPrompts | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_foregrounds(self) -> int:
        return sum(name.startswith("alpha") for name in self.layers)

    def composite(self) -> np.ndarray:
        """Re-composite the generated layers (fg0 on top), the check on cross-layer coherence."""
        k = range(self.num_foregrounds)
        return composite(
            np.stack([self.layers[f"fg{i}"] for i in k]), np.stack([self.layers[f"alpha{i}"] for i in k]),
            self.layers["background"],
        )

    def coherence_error(self) -> float:
        """Mean |full - composite(fg, alpha, bg)| over all pixels, in [0, 1] units."""
        return float(np.abs(self.layers["full"] - self.composite()).mean())

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write every layer as mp4 (alpha lossless grey), the re-composite, a contact sheet and a json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        frames = {name: _to_uint8(video) for name, video in self.layers.items()}
        frames["composite"] = _to_uint8(self.composite())
        for name, video in frames.items():
            path = folder / f"{name}.mp4"
            path.write_bytes(encode_video(video, self.fps, lossless=video.ndim == 3, crf=12))
            written[name] = path
        k = range(self.num_foregrounds)
        rows = layer_rows(frames["full"], frames["background"], [frames[f"fg{i}"] for i in k],
                          [frames[f"alpha{i}"] for i in k])
        written["contact_sheet"] = save_png(contact_sheet([*rows, ("composite", frames["composite"])]),
                                            folder / "contact_sheet.png")
        info = {"fps": self.fps, "coherence_error": self.coherence_error(), **self.metrics}
        if self.prompts is not None:
            info["prompts"] = {"full": self.prompts.full, "background": self.prompts.background,
                               "foregrounds": list(self.prompts.foregrounds),
                               "negative": self.prompts.negative_slots()}
        written["json"] = folder / "sample.json"
        written["json"].write_text(json.dumps(info, indent=2))
        return written


def read_given_layers(items: Sequence[str], layout: Layout, num_frames: int, height: int,
                      width: int) -> dict[str, np.ndarray]:
    """`NAME=video.mp4` items -> float layers in [0, 1] at the sampling size, for conditioning."""
    layers = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in layout.names:
            raise ValueError(f"--given {item!r}: expected NAME=video with NAME one of {', '.join(layout.names)}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--given {name}: no video at {path}")
        video = decode_video(path, grey=name.startswith("alpha"))
        if len(video) < num_frames:
            raise ValueError(f"--given {name}: {path} has {len(video)} frames, {num_frames} are needed")
        resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in video[:num_frames]])
        layers[name] = resized.astype(np.float32) / 255
    return layers


def _to_uint8(video: np.ndarray) -> np.ndarray:
    return (np.clip(video, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


class LayerT2VPipeline:
    """Encode prompts, sample the packed layers, decode each layer with the VAE."""

    def __init__(self, transformer: LayeredWanTransformer, vae: LayerVAE, text_encoder: TextEncoder,
                 scheduler: str = "unipc", shift: float = 3.0, text_length: int = 512) -> None:
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.scheduler = make_scheduler(scheduler, shift)
        self.text_length = text_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        layer_weights: str | Path | None = None,
        alpha_adapter: str | Path | None = None,
        transformer: str | Path | None = None,
        scheduler: str = "unipc",
        shift: float = 3.0,
        text_length: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **transformer_options,
    ) -> LayerT2VPipeline:
        """Load every part from a local Wan folder.

        `transformer` is a saved LayeredWanTransformer folder (full fine-tuning) that replaces the
        folder's own; `layer_weights`/`alpha_adapter` are trained adapter folders.
        """
        path = Path(path)
        transformer_dir = Path(transformer) if transformer is not None else path / "transformer"
        config = json.loads((transformer_dir / "config.json").read_text())
        if config.get("_class_name") == LayeredWanTransformer.__name__:
            transformer = LayeredWanTransformer.from_pretrained(transformer_dir, torch_dtype=dtype)
        else:
            transformer = LayeredWanTransformer.from_wan(path, torch_dtype=dtype, **transformer_options)
        if layer_weights is not None:
            transformer.load_layer_weights(layer_weights)
        vae = LayerVAE.from_pretrained(path)
        if alpha_adapter is not None:
            vae.load_adapter(alpha_adapter)
        text_encoder = TextEncoder.from_pretrained(path)
        if text_length is None:
            text_length = min(512, int(text_encoder.tokenizer.model_max_length))
        pipe = cls(transformer.eval(), vae.eval(), text_encoder.eval(), scheduler, shift, text_length)
        return pipe.to(device)

    @classmethod
    def from_run(cls, run: str | Path, **options) -> LayerT2VPipeline:
        """Everything a finished training run (stage 2 or 3) produced, on top of its base model."""
        info = run_provenance(run)
        if not info.get("finished"):
            raise ValueError(f"{run} has not finished training; sample from a finished run")
        if not (info.get("layer_weights") or info.get("transformer")):
            raise ValueError(f"{run} is a {info['stage']} run; sample from a stage 2 or 3 run")
        return cls.from_pretrained(
            info["model"], layer_weights=info.get("layer_weights"), alpha_adapter=info.get("alpha_adapter"),
            transformer=info.get("transformer"), text_length=get_preset(info["preset"]).text_length,
            positions=info["positions"], layer_routing=info["layer_routing"],
            # Runs recorded before these ablation switches trained with both on.
            layer_adaln=info.get("layer_adaln", True), joint_attention=info.get("joint_attention", True), **options,
        )

    def to(self, device: str | torch.device) -> LayerT2VPipeline:
        for part in (self.transformer, self.vae, self.text_encoder):
            part.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def encode_prompts(self, prompts: Sequence[LayerPrompts]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, P, S, D] prompt and negative-prompt embeddings, one row per slot."""
        rows = [p.slots() for p in prompts] + [p.negative_slots() for p in prompts]
        positive, negative = self.text_encoder.encode_slots(rows, self.text_length).to(self.device).chunk(2)
        return positive, negative

    @torch.no_grad()
    def encode_layers(self, videos: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Given layers as float [T, H, W, 3] (alpha [T, H, W]) in [0, 1] -> latents [1, C, T', H', W']."""
        latents = {}
        for name, video in videos.items():
            frames = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32))
            frames = frames[None, None] if frames.ndim == 3 else frames.permute(3, 0, 1, 2)[None] * 2 - 1
            latents[name] = self.vae.encode_layer(name, frames)
        return latents

    @torch.no_grad()
    def __call__(
        self,
        prompts: LayerPrompts | Sequence[LayerPrompts],
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        steps: int = 30,
        guidance_scale: float = 5.0,
        seed: int = 0,
        given: Mapping[str, np.ndarray] | None = None,
        fps: float = 16.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[LayeredVideo]:
        """Sample layered videos; `given` layers (decoded frames) are held fixed as conditions."""
        prompts = [prompts] if isinstance(prompts, LayerPrompts) else list(prompts)
        layouts = {p.layout for p in prompts}
        if len(layouts) != 1:
            raise ValueError("all prompts in one call must have the same number of foregrounds")
        layout = layouts.pop()
        if (num_frames - 1) % TEMPORAL_COMPRESSION or height % 16 or width % 16:
            raise ValueError(f"need 4n+1 frames and sizes divisible by 16, got {num_frames} frames {height}x{width}")
        latent_shape = (self.transformer.backbone.config.in_channels, (num_frames - 1) // TEMPORAL_COMPRESSION + 1,
                        height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)
        conditions = {
            name: latent.expand(len(prompts), *latent.shape[1:])
            for name, latent in self.encode_layers(given or {}).items()
        }
        positive, negative = self.encode_prompts(prompts)
        generator = torch.Generator().manual_seed(seed)
        packed = sample_latents(self.transformer, self.scheduler, layout, latent_shape, positive, negative,
                                guidance_scale, steps, conditions, generator, progress)
        return self.decode(layout, packed, fps, prompts)

    def decode(self, layout: Layout, packed: torch.Tensor, fps: float,
                prompts: list[LayerPrompts]) -> list[LayeredVideo]:
        """Packed latents [B, C, L*T', H', W'] -> one LayeredVideo per prompt; each layer is decoded for the
        whole batch at once (the VAE is faster per clip in batches)."""
        layers: dict[str, np.ndarray] = {}
        for name, kind, latent in zip(layout.names, layout.types, layout.unpack(packed).values()):
            if kind == LayerType.ALPHA:
                layers[name] = self.vae.decode_alpha(latent)[:, 0].float().cpu().numpy()
            else:
                layers[name] = (self.vae.decode_video(latent).permute(0, 2, 3, 4, 1).float().cpu().numpy() + 1) / 2
        return [LayeredVideo({name: video[i] for name, video in layers.items()}, fps, p)
                for i, p in enumerate(prompts)]
