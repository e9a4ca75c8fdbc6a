"""A tiny, randomly initialised Wan 2.1 VACE pipeline for tests and demos of the `inpaint.vace` backend.

It is diffusers' `WanVACEPipeline` with every part shrunk: a 2-layer VACE transformer of width 24
(2 heads of 12; both layers take VACE hints), the tiny Wan VAE of `layert2v.vae` (Wan 2.1's 4x time
and 8x space compression, 16 latent channels, so the stage meets the real model's size rules) and
the tiny UMT5 of `layert2v.text` (width 32, an offline tokenizer). The scheduler is Wan 2.1's own:
UniPC on flow-matching sigmas.
"""

from __future__ import annotations

from pathlib import Path

Z_DIM = 16  # the tiny VAE's latent channels, as Wan 2.1's
TEXT_DIM = 32  # the tiny UMT5's d_model; the transformer's text projection reads it
HEADS, HEAD_DIM = 2, 12  # width 24; the rotary embedding splits a head into time/height/width parts of 4
LAYERS = 2
VACE_LAYERS = [0, 1]  # must include layer 0 and stay below LAYERS
FLOW_SHIFT = 3.0  # Wan 2.1's shift for 480p


def write_tiny_vace(folder: Path, seed: int = 0) -> Path:
    """Write a random tiny `WanVACEPipeline` to `folder` with `save_pretrained` (weights drawn from `seed`
    without touching the global RNG); returns `folder`, which `WanVACEPipeline.from_pretrained` loads."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    from layert2v.text import write_tiny_text_encoder
    from layert2v.vae import tiny_vae_config

    folder = Path(folder)
    write_tiny_text_encoder(folder, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**tiny_vae_config())
        if vae.config.z_dim != Z_DIM:
            raise ValueError(f"the tiny VAE has {vae.config.z_dim} latent channels, the transformer expects {Z_DIM}")
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=Z_DIM,
            out_channels=Z_DIM, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=LAYERS,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=VACE_LAYERS,
            # The control input: the latents of the kept and of the hole part of the video (2 z_dim), and the
            # mask folded from each 8x8 pixel cell into 64 channels.
            vace_in_channels=2 * Z_DIM + 8 * 8,
        )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=FLOW_SHIFT, num_train_timesteps=1000)
    pipeline = WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(folder / "text_encoder"),
        vae=vae, scheduler=scheduler, transformer=transformer,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
