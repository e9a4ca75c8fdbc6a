"""LayerVAE on a tiny random Wan VAE: shapes, normalisation, the alpha paths, the decoder LoRA and adapter files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError

from layert2v.vae import ADAPTER_WEIGHTS, CausalConv3dLora, LayerVAE, tiny_vae_config, write_tiny_vae


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wan")
    write_tiny_vae(path)
    return path


def clip(channels: int, frames: int = 17, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A random clip: alpha in [0, 1] for one channel, video in [-1, 1] for three."""
    x = torch.rand(1, channels, frames, height, width, generator=torch.Generator().manual_seed(seed))
    return x if channels == 1 else 2 * x - 1


def randomize_adapter(vae: LayerVAE, seed: int = 0) -> None:
    """Move every adapter weight away from its init, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vae.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("alpha_mode", ["vae", "downsample"])
@pytest.mark.parametrize("frames", [17, 1])
def test_shapes_and_ranges(wan_dir, alpha_mode, frames):
    vae = LayerVAE.from_pretrained(wan_dir, alpha_mode=alpha_mode)
    latent_shape = (1, 16, (frames - 1) // 4 + 1, 6, 8)
    with torch.no_grad():
        z = vae.encode_video(clip(3, frames, 48, 64))
        video = vae.decode_video(z)
        z_alpha = vae.encode_alpha(clip(1, frames, 48, 64))
        alpha = vae.decode_alpha(z_alpha)
    assert z.shape == z_alpha.shape == latent_shape
    assert video.shape == (1, 3, frames, 48, 64) and video.min() >= -1 and video.max() <= 1
    assert alpha.shape == (1, 1, frames, 48, 64) and alpha.min() >= 0 and alpha.max() <= 1


def test_rejects_clips_off_the_latent_grid(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    with pytest.raises(ValueError, match="4n \\+ 1"):
        vae.encode_video(clip(3, frames=16))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode_alpha(clip(1, height=60))
    with pytest.raises(ValueError, match="B, 1, T, H, W"):
        vae.encode_alpha(clip(3))


def test_latents_are_the_normalised_posterior_mode(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    video = clip(3)
    with torch.no_grad():
        z = vae.encode_video(video)
        mode = vae.vae.encode(video).latent_dist.mode()
        sampled = vae.encode_video(video, sample=True, generator=torch.Generator().manual_seed(0))
        assert torch.equal(z, vae.encode_video(video))
    mean = torch.tensor(vae.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z * std + mean, mode)
    assert not torch.equal(sampled, z)


def test_downsample_roundtrip_is_exact_on_cell_constant_alpha(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir, alpha_mode="downsample")
    cells = torch.rand(2, 1, 5, 6, 8, generator=torch.Generator().manual_seed(0))
    # Wan's causal grid: latent frame 0 is pixel frame 0, latent frame k > 0 is pixel frames 4k - 3 .. 4k.
    alpha = torch.cat([cells[:, :, :1], cells[:, :, 1:].repeat_interleave(4, 2)], dim=2)
    alpha = alpha.repeat_interleave(8, 3).repeat_interleave(8, 4)
    z = vae.encode_alpha(alpha)
    torch.testing.assert_close(z, (2 * cells - 1).expand(-1, 16, -1, -1, -1))
    torch.testing.assert_close(vae.decode_alpha(z), alpha)


def test_downsample_is_lossy_below_a_cell(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir, alpha_mode="downsample")
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float().expand(1, 1, 17, 64, 64)
    torch.testing.assert_close(vae.decode_alpha(vae.encode_alpha(checker)), torch.full_like(checker, 0.5))


def test_project_in_starts_as_the_grey_video(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    alpha = clip(1)
    with torch.no_grad():
        torch.testing.assert_close(vae.encode_alpha(alpha), vae.encode_video((2 * alpha - 1).repeat(1, 3, 1, 1, 1)))


def test_decoder_lora_targets_every_decoder_conv_and_nothing_else(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    convs = [n for n, m in vae.vae.decoder.named_modules() if isinstance(m, (WanCausalConv3d, torch.nn.Conv2d))]
    vae.add_decoder_lora(rank=4)
    wrapped = {n: m for n, m in vae.vae.decoder.named_modules() if isinstance(m, BaseTunerLayer)}
    assert sorted(wrapped) == sorted(convs)
    assert all(isinstance(wrapped[n], CausalConv3dLora) for n in convs if n.endswith(("conv1", "time_conv")))
    assert not any(isinstance(m, BaseTunerLayer) for m in vae.vae.encoder.modules())


def test_decoder_lora_is_a_noop_at_init_and_trains_only_the_adapter(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    alpha = clip(1)
    with torch.no_grad():
        z = vae.encode_alpha(alpha)
        before = vae.decode_alpha(z)
    vae.add_decoder_lora(rank=4)
    with torch.no_grad():
        assert torch.equal(vae.decode_alpha(z), before)

    vae.decode_alpha(vae.encode_alpha(alpha)).square().mean().backward()
    trainable = {id(p) for p in vae.trainable_parameters()}
    for name, p in vae.named_parameters():
        assert p.requires_grad == (id(p) in trainable), name
        assert (p.grad is not None) == (id(p) in trainable), name
    # B starts at zero, so only B and the zero-initialised last project-in conv get gradient on the first step.
    lora_b = [p for n, p in vae.named_parameters() if ".lora_B." in n]
    assert lora_b and all(p.grad.abs().sum() > 0 for p in lora_b)
    assert vae.project_in.residual[-1].weight.grad.abs().sum() > 0


def test_decoder_lora_is_exact_on_causal_convs(wan_dir):
    """Merged weights equal the LoRA branch only if it sees the base conv's causal padding and frame cache."""
    vae = LayerVAE.from_pretrained(wan_dir)
    vae.add_decoder_lora(rank=4)
    randomize_adapter(vae)
    z = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unmerged = vae.decode_alpha(z)
        for m in vae.vae.decoder.modules():
            if isinstance(m, BaseTunerLayer):
                m.merge()
        merged = vae.decode_alpha(z)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_decode_video_bypasses_the_lora(wan_dir):
    vae = LayerVAE.from_pretrained(wan_dir)
    z = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        video, alpha = vae.decode_video(z), vae.decode_alpha(z)
        vae.add_decoder_lora(rank=4)
        randomize_adapter(vae)
        assert torch.equal(vae.decode_video(z), video)
        assert not torch.allclose(vae.decode_alpha(z), alpha)
    assert all(p.requires_grad for p in vae.trainable_parameters())


def test_adapter_roundtrip_without_pickle(wan_dir, tmp_path, monkeypatch):
    trained = LayerVAE.from_pretrained(wan_dir)
    trained.add_decoder_lora(rank=4, alpha=8)
    randomize_adapter(trained)
    trained.save_adapter(tmp_path / "adapter")

    def no_pickle(*args, **kwargs):
        raise AssertionError("adapter loading must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    fresh = LayerVAE.from_pretrained(wan_dir)
    fresh.load_adapter(tmp_path / "adapter")
    assert (fresh.lora_rank, fresh.lora_alpha) == (4, 8)
    alpha = clip(1)
    with torch.no_grad():
        expected = trained.decode_alpha(trained.encode_alpha(alpha))
        assert torch.equal(fresh.decode_alpha(fresh.encode_alpha(alpha)), expected)


def test_adapter_loading_refuses_pickles_and_mismatches(wan_dir, tmp_path):
    vae = LayerVAE.from_pretrained(wan_dir)
    vae.save_adapter(tmp_path / "adapter")
    with pytest.raises(ValueError, match="does not fit"):
        LayerVAE.from_pretrained(wan_dir, alpha_mode="downsample").load_adapter(tmp_path / "adapter")
    torch.save(vae.project_in.state_dict(), tmp_path / "adapter" / ADAPTER_WEIGHTS)
    with pytest.raises(SafetensorError):
        LayerVAE.from_pretrained(wan_dir).load_adapter(tmp_path / "adapter")


def test_from_pretrained_refuses_pickled_vae(tmp_path):
    AutoencoderKLWan(**tiny_vae_config()).save_pretrained(tmp_path / "vae", safe_serialization=False)
    with pytest.raises(OSError, match="safetensors"):
        LayerVAE.from_pretrained(tmp_path)


def test_write_tiny_vae_is_deterministic(tmp_path):
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        write_tiny_vae(tmp_path / name, seed=seed)
    weights = {name: (tmp_path / name / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]
