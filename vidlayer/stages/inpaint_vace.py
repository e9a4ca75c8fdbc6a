"""The clean background by generation: Wan 2.1 VACE fills the foreground's hole in the whole clip at once.

`propagate` can only fill a hole with background some frame saw; what the subject hides in
every frame it leaves to 2D Telea inpainting. VACE (Jiang et al. 2025), a video diffusion model
conditioned on a masked video, generates that part instead, consistent over time and guided by
the background caption. Its input is the clip as it is, with the hole (every matte, grown by
the margin, exactly as `propagate` grows it) as the mask; its output is pasted into the hole only
and faded into the frame across the margin as `propagate` does, so every known background
pixel is kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vidlayer.clip import Captions, Clip
from vidlayer.devices import pick_device, pick_dtype
from vidlayer.stages.base import Resources, Stage, register
from vidlayer.stages.caption import split_caption
from vidlayer.stages.inpaint import PropagateInpaintParams, blend_seam, clip_holes

@dataclass
class VaceInpaintParams:
    model: str = ""  # a local diffusers WanVACEPipeline folder, or a hub id (Wan-AI/Wan2.1-VACE-1.3B-diffusers)
    device: str = "auto"  # auto: the worker's GPU, else the CPU
    dtype: str = "auto"  # of the transformer and text encoder (auto: bf16 on GPUs); the VAE always runs in fp32
    steps: int = 30  # denoising steps
    guidance_scale: float = 5.0  # classifier-free guidance; 1 or less turns it off (half the compute)
    negative_prompt: str = ""  # what guidance steers away from
    alpha_threshold: float = PropagateInpaintParams.alpha_threshold  # as propagate's: foreground above it is hole
    margin: float = PropagateInpaintParams.margin  # as propagate's: hole growth, share of the short side
    seed: int = 0  # of the generation's noise, so a rebuild gives the same background


def background_prompt(captions: Captions) -> str:
    """The caption VACE generates the hole from: the background's when one is known, else the scene
    part of the full caption (the subject part would paint the subject back into the hole)."""
    if captions.background:
        return captions.background
    return split_caption(captions.full)[1]


@register
class VaceInpaint(Stage):
    stage = "inpaint"
    backend = "vace"
    Params = VaceInpaintParams
    default_resources = Resources(cpus=1)  # GPU shares are the pipeline YAML's to set

    def setup(self) -> None:
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        p: VaceInpaintParams = self.params
        if not p.model:
            raise ValueError("inpaint.vace needs `model`: a local WanVACEPipeline folder or a hub id such as "
                             "Wan-AI/Wan2.1-VACE-1.3B-diffusers")
        self.device = pick_device(p.device)
        dtype = pick_dtype(p.dtype, self.device)
        # Wan's VAE loses detail in bf16, and it is a small share of the compute.
        vae = AutoencoderKLWan.from_pretrained(p.model, subfolder="vae", dtype=torch.float32)
        self.pipeline: Any = WanVACEPipeline.from_pretrained(p.model, vae=vae, dtype=dtype).to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)

    def process(self, clip: Clip) -> Clip:
        p: VaceInpaintParams = self.params
        frames = clip.frames
        cores, holes, margin = clip_holes(clip.alphas, p.alpha_threshold, p.margin)
        clip.metrics.update(inpaint_hole_fraction=float(holes.mean()))
        if not holes.any():
            clip.background = frames.copy()
            return clip
        generated = self.generate(frames, holes, background_prompt(clip.captions))
        filled = np.where(holes[..., None], generated, frames)
        clip.background = np.stack([blend_seam(frames[t], filled[t], cores[t], margin) for t in range(len(frames))])
        return clip

    def check_size(self, frames: np.ndarray) -> None:
        """VACE needs 4n + 1 frames and sides that are multiples of 16 (the VAE's 8x times the 2x patches);
        the pipeline would otherwise crop or drop frames silently, and the output would not line up."""
        pipeline = self.pipeline
        time_factor = pipeline.vae_scale_factor_temporal
        side = pipeline.vae_scale_factor_spatial * pipeline.transformer.config.patch_size[1]
        count, height, width = frames.shape[:3]
        if (count - 1) % time_factor or height % side or width % side:
            raise ValueError(f"inpaint.vace needs {time_factor}n + 1 frames with sides that are multiples of {side}, "
                             f"got {count} frames of {height}x{width}: set the window stage to give them")

    @torch.no_grad()
    def generate(self, frames: np.ndarray, holes: np.ndarray, prompt: str) -> np.ndarray:
        """VACE's video [T, H, W, 3] uint8 for the frames with their holes (white mask) to generate."""
        p: VaceInpaintParams = self.params
        self.check_size(frames)
        count, height, width = frames.shape[:3]
        generator = torch.Generator(self.device).manual_seed(p.seed)
        video = self.pipeline(
            video=[Image.fromarray(frame) for frame in frames],
            mask=[Image.fromarray(hole.astype(np.uint8) * 255) for hole in holes],
            prompt=prompt, negative_prompt=p.negative_prompt,
            height=height, width=width, num_frames=count, num_inference_steps=p.steps,
            guidance_scale=p.guidance_scale, generator=generator, output_type="np",
        ).frames[0]
        return np.rint(np.clip(video, 0, 1) * 255).astype(np.uint8)
