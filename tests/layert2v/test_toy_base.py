"""The toy base model: a tiny Wan VAE fitted to the toy domain, and the folder that holds it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from layert2v.text import TextEncoder
from layert2v.toy_base import (INFO, VaeFit, fit_vae, he_rescale, layer_clips, set_latent_statistics,
                               toy_vocabulary, write_toy_base)
from layert2v.transformer import LayeredWanTransformer
from layert2v.vae import LayerVAE, tiny_vae_config
from vidlayer.toy import ALL_OBJECTS, ToyBackground, ToyScene, write_toy_dataset

QUICK_FIT = VaeFit(steps=4, batch_size=2, warmup=2, max_clips=6, eval_clips=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out, train=6, test=2, seed=3, frames=9, size=32, progress=False)
    return out


@pytest.fixture(scope="module")
def base(dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy-base")
    write_toy_base(path, dataset, seed=0, fit=QUICK_FIT, progress=False)
    return path


def test_he_rescale_gives_he_variance():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(64, 64, 3)
    he_rescale(conv)
    fan_in = 64 * 27
    assert conv.weight.var().item() == pytest.approx(2 / fan_in, rel=0.05)


def test_every_caption_word_is_one_token(base):
    encoder = TextEncoder.from_pretrained(base)
    scene = ToyScene(ALL_OBJECTS[-3:], ToyBackground("clouds", "cyan", "up"))
    caption = scene.captions().full
    ids = encoder.tokenizer(caption).input_ids
    assert len(ids) == len(caption.split()) + 1  # + eos
    assert encoder.tokenizer.unk_token_id not in ids
    assert len(ids) <= 32  # the toy preset's text length holds a three-object caption
    assert {"star", "magenta", "clouds", "zooming", "over", "and"} <= set(toy_vocabulary())


def test_layer_clips_are_the_rgb_layers(dataset):
    clips = layer_clips(dataset / "train", limit=100)
    info = json.loads((dataset / "toy.json").read_text())
    layers = sum(len(json.loads(line)["foreground"]) + 2
                 for line in (dataset / "train" / "prompts.jsonl").read_text().splitlines())
    assert clips.shape == (layers, 3, info["frames"], info["size"], info["size"]) and clips.dtype == torch.uint8


def test_fitting_lowers_the_reconstruction_loss(dataset):
    clips = layer_clips(dataset / "train", limit=8)
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config())
    he_rescale(vae)
    losses = fit_vae(vae, clips, VaeFit(steps=30, batch_size=4, warmup=5, lr=3e-3), progress=False)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert all(math.isfinite(x) for x in losses)


def test_latent_statistics_make_the_latents_unit_scale(dataset):
    clips = layer_clips(dataset / "train", limit=8)
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config())
    set_latent_statistics(vae, clips)
    with torch.no_grad():
        latents = torch.cat([LayerVAE(vae).encode_video(c[None].float() / 127.5 - 1) for c in clips])
    per_channel = latents.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-3
    assert per_channel.std(1).sub(1).abs().max() < 1e-2


def test_the_base_folder_loads_like_a_wan_checkpoint(base):
    info = json.loads((base / INFO).read_text())
    assert info["vae_fit"]["steps"] == QUICK_FIT.steps and info["held_out_clips"] == 2
    assert math.isfinite(info["held_out_psnr_db"])
    vae = LayerVAE.from_pretrained(base)
    assert vae.latents_std.flatten().tolist() != AutoencoderKLWan().config.latents_std  # measured, not Wan's
    transformer = LayeredWanTransformer.from_wan(base)
    assert transformer.backbone.config.num_layers == 4 and transformer.backbone.config.text_dim == 32


def test_a_complete_base_is_kept(base, dataset):
    before = (base / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    info = write_toy_base(base, dataset, fit=VaeFit(steps=1000), progress=False)
    assert info["vae_fit"]["steps"] == QUICK_FIT.steps
    assert (base / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == before
