import json
import shutil
from dataclasses import replace
from itertools import islice

import pytest
import torch
import webdataset as wds

from layert2v.data import DataConfig, LayerLoader
from layert2v.latent_cache import CachedLoader, cache_latents
from layert2v.text import TextEncoder
from layert2v.vae import LayerVAE

TEXT_LENGTH = 8


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    return LayerVAE.from_pretrained(tiny_checkpoint), TextEncoder.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def config(inline_build):
    return DataConfig(shards=str(inline_build[0]), num_frames=5, height=32, width=32, batch_size=1)


@pytest.fixture(scope="module")
def cache(config, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent-cache")
    return out, cache_latents(config, *models, TEXT_LENGTH, out, progress=False)


@pytest.fixture(scope="module")
def mixed(cache, tmp_path_factory):
    """The cache's samples (K = 1 and 2 in the default build) copied under new keys into 2 shards of 6."""
    folder, _ = cache
    out = tmp_path_factory.mktemp("mixed-cache")
    shard = str(folder / "latents-000000.tar")
    samples = list(wds.DataPipeline(wds.SimpleShardList([shard]), wds.tarfile_to_samples()))
    assert sorted(json.loads(s["json"])["num_foregrounds"] for s in samples) == [1, 2]
    copies = [{k: v for k, v in s.items() if not k.startswith("__")} | {"__key__": f"{s['__key__']}-{c}"}
              for c in range(6) for s in samples]
    for shard in range(2):
        with wds.TarWriter(str(out / f"latents-{shard:06d}.tar")) as writer:
            for sample in copies[6 * shard:6 * shard + 6]:
                writer.write(sample)
    for name in ("cache.json", "empty_prompt.safetensors"):
        shutil.copy(folder / name, out / name)
    return out


def _plain(config):
    """What the cache reads: centre crops, captions kept, shard order, one epoch."""
    return replace(config, repeat=False, random_crop=False, caption_dropout=0.0, slot_dropout=0.0, shuffle_buffer=0)


def _all(folder, **options):
    return {b.keys[0]: b for b in CachedLoader(folder, batch_size=1, shuffle_buffer=0, repeat=False, **options)}


def test_cache_matches_encoding_the_loader_batches(cache, config, models):
    folder, count = cache
    vae, text = models
    batches = list(LayerLoader(_plain(config)))
    assert count == len(batches) > 0
    cached = _all(folder, caption_dropout=0.0)
    assert sorted(cached) == sorted(b.keys[0] for b in batches)
    assert {p.name for p in folder.iterdir()} == {"cache.json", "empty_prompt.safetensors", "latents-000000.tar"}
    assert json.loads((folder / "cache.json").read_text()) == {
        "num_frames": 5, "fps": config.fps, "height": 32, "width": 32, "text_length": TEXT_LENGTH, "count": count}
    with torch.no_grad():
        for batch in batches:
            layers = {name: vae.encode_alpha(v) if name.startswith("alpha") else vae.encode_video(v)
                      for name, v in batch.videos.items()}
            got = cached[batch.keys[0]]
            assert got.layout == batch.layout
            torch.testing.assert_close(got.latents, batch.layout.pack(layers), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.prompt_embeds[0], text.encode(batch.prompts[0], TEXT_LENGTH))


def test_batches_share_one_layout_with_packed_shapes(mixed, config):
    batches = list(CachedLoader(mixed, batch_size=2, shuffle_buffer=4, repeat=False))
    assert len(batches) == 6 and len({b.layout for b in batches}) == 2
    t, h, w = (config.num_frames - 1) // 4 + 1, config.height // 8, config.width // 8
    for b in batches:
        layout = b.layout
        assert b.latents.shape == (2, 16, layout.num_layers * t, h, w) and b.latents.dtype == torch.float32
        assert b.prompt_embeds.shape[:3] == (2, layout.num_prompts, TEXT_LENGTH)
    with pytest.raises(ValueError, match="gave no batch"):
        next(iter(CachedLoader(mixed, batch_size=1, foregrounds=[8])))
    only = list(CachedLoader(mixed, batch_size=2, foregrounds=[2], repeat=False))
    assert len(only) == 3 and all(b.layout.num_foregrounds == 2 for b in only)


def test_caption_dropout_uses_the_empty_prompt(cache, models):
    folder, _ = cache
    empty = models[1].encode([""], TEXT_LENGTH)[0]
    dropped = _all(folder, caption_dropout=1.0)
    kept = _all(folder, caption_dropout=0.0)
    for key, batch in dropped.items():
        torch.testing.assert_close(batch.prompt_embeds[0], empty.expand_as(batch.prompt_embeds[0]))
        assert not torch.equal(kept[key].prompt_embeds[0][0], empty)  # the full-clip caption is never empty


def test_resume_continues_with_the_same_batches(mixed):
    folder = mixed
    options = dict(batch_size=2, seed=3, shuffle_buffer=4, caption_dropout=0.5)
    n, more = 8, 4  # 6 batches an epoch: the saved position is in the second epoch
    reference = list(islice(CachedLoader(folder, **options), n + more))
    first = CachedLoader(folder, **options)
    list(islice(first, n))
    state = first.state_dict()
    assert state["epoch"] == 1
    second = CachedLoader(folder, **options)
    second.load_state_dict(state)
    for want, got in zip(reference[n:], islice(second, more), strict=True):
        assert got.keys == want.keys
        assert torch.equal(got.latents, want.latents) and torch.equal(got.prompt_embeds, want.prompt_embeds)
    with pytest.raises(ValueError, match="seed"):
        CachedLoader(folder, **options | {"seed": 4}).load_state_dict(state)


def test_partial_shards_are_ignored(cache, tmp_path):
    folder, _ = cache
    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    shutil.copy(copy / "latents-000000.tar", copy / "latents-000001.tar.partial")
    assert CachedLoader(copy, batch_size=1).urls == [str(copy / "latents-000000.tar")]
    assert sorted(_all(copy)) == sorted(_all(folder))


def test_an_interrupted_run_leaves_no_finished_shard(config, models, tmp_path, monkeypatch):
    vae, text = models
    calls = []

    def failing(video, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("killed")
        return LayerVAE.encode_video(vae, video, *args, **kwargs)

    monkeypatch.setattr(vae, "encode_video", failing)
    with pytest.raises(RuntimeError, match="killed"):
        cache_latents(config, vae, text, TEXT_LENGTH, tmp_path, progress=False)
    assert not list(tmp_path.glob("latents-*")) and not (tmp_path / "cache.json").exists()
    with pytest.raises(FileNotFoundError):
        CachedLoader(tmp_path, batch_size=1)
