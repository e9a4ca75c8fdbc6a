"""Precomputed latents and prompt embeddings for stages 2 and 3, whose VAE and text encoder are frozen.

`cache_latents` makes one pass over the VidLayer shards (centre crop, no caption or slot dropout), encodes each
clip's layers and prompt slots once and writes them as WebDataset shards of safetensors:

    out/latents-000000.tar, ...   per sample: latents.safetensors {layer name: [C, T', H', W']},
                                  prompts.safetensors {"embeds": [P, S, D]}, json (K, prompts, frames, size, fps)
    out/empty_prompt.safetensors  {"embeds": [S, D]}: the embedding of "", for caption dropout
    out/cache.json                the data config used, text_length and the sample count; written last

A shard is written under a `.partial` name and renamed when complete, and cache.json marks the whole cache as
complete, so a killed run never leaves something that reads as finished. Tensors keep the encoders' dtype
(bf16 encoders give a bf16 cache); `CachedLoader` hands out float32, like `LayerLearning.encode`.

`CachedLoader` reads such a folder at training time: batches grouped by foreground count, caption dropout from the
cached empty prompt, and an exact resume (the order is a function of (seed, epoch); resuming skips the consumed
batches without decoding their tensors). The cache fixes the crop: every epoch sees the same centre window.
"""

from __future__ import annotations

import json
from collections import defaultdict
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from .data import DataConfig, LayerBatch, LayerLoader, _group_by_foregrounds, _rng
from .layout import Layout
from .text import TextEncoder
from .vae import LayerVAE

SHARD_PATTERN = "latents-%06d.tar"
PARTIAL_SUFFIX = ".partial"
EMPTY_PROMPT = "empty_prompt.safetensors"
CACHE_INFO = "cache.json"
SHARD_MAX_SAMPLES = 1000
SHARD_MAX_BYTES = 1e9
ENCODE_BATCH = 8  # clips of one foreground count encoded together


def _finish_shard(partial: str) -> None:
    os.replace(partial, partial.removesuffix(PARTIAL_SUFFIX))


def cache_latents(config: DataConfig, vae: LayerVAE, text: TextEncoder, text_length: int, out: Path,
                  progress: bool = True) -> int:
    """Encode every sample of `config.shards` once into `out`; returns the number of samples cached.

    The crop is the centre one and no caption is dropped (dropout happens in `CachedLoader`). The config's
    filters (split, foregrounds, max_foregrounds) and size, frames and fps apply as given.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / CACHE_INFO).exists() or any(out.glob("latents-*.tar")):
        raise FileExistsError(f"{out} already holds a latent cache (or part of one); remove it or pick another folder")
    for stale in out.glob(f"latents-*.tar{PARTIAL_SUFFIX}"):
        stale.unlink()
    config = replace(config, repeat=False, random_crop=False, caption_dropout=0.0, slot_dropout=0.0,
                     batch_size=1, shuffle_buffer=0)

    with torch.no_grad():
        empty = text.encode([""], text_length)[0].cpu().contiguous()
    tmp = out / (EMPTY_PROMPT + PARTIAL_SUFFIX)
    tmp.write_bytes(save_safetensors({"embeds": empty}))
    os.replace(tmp, out / EMPTY_PROMPT)

    count = 0
    writer = wds.ShardWriter(str(out / (SHARD_PATTERN + PARTIAL_SUFFIX)), maxcount=SHARD_MAX_SAMPLES,
                             maxsize=SHARD_MAX_BYTES, post=_finish_shard, verbose=0)

    def write(group: list[LayerBatch]) -> None:
        """Encode clips of one layout together (the VAE is several times faster per clip in batches)."""
        latents = {name: vae.encode_layer(name, torch.cat([b.videos[name] for b in group])).cpu()
                   for name in group[0].videos}
        embeds = text.encode([p for b in group for p in b.prompts[0]], text_length).cpu()
        for i, (batch, prompts) in enumerate(zip(group, embeds.chunk(len(group)))):
            writer.write({
                "__key__": batch.keys[0],
                "latents.safetensors": save_safetensors({n: v[i].contiguous() for n, v in latents.items()}),
                "prompts.safetensors": save_safetensors({"embeds": prompts.contiguous()}),
                "json": {"num_foregrounds": batch.layout.num_foregrounds, "prompts": batch.prompts[0],
                         "frames": config.num_frames, "height": config.height, "width": config.width,
                         "fps": config.fps},
            })
        bar.update(len(group))

    try:
        with torch.no_grad(), tqdm(desc="caching latents", unit="clip", disable=not progress) as bar:
            pending: dict[int, list[LayerBatch]] = defaultdict(list)
            for batch in LayerLoader(config):
                group = pending[batch.layout.num_foregrounds]
                group.append(batch)
                if len(group) == ENCODE_BATCH:
                    write(group)
                    count += len(group)
                    group.clear()
            for group in pending.values():
                if group:
                    write(group)
                    count += len(group)
    except BaseException:
        # Never rename a shard cut short: close it under its temporary name and drop it.
        writer.post = None
        partial = writer.fname
        writer.close()
        if partial:
            Path(partial).unlink(missing_ok=True)
        raise
    writer.close()

    info = {"num_frames": config.num_frames, "fps": config.fps, "height": config.height, "width": config.width,
            "text_length": text_length, "count": count}
    tmp = out / (CACHE_INFO + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out / CACHE_INFO)
    return count


@dataclass
class CachedBatch:
    """Samples sharing one Layout: packed latents [B, C, L*T', H', W'], prompt embeddings [B, P, S, D], fp32."""

    layout: Layout
    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _Cached:
    """A cached sample with its tensors still serialised."""

    key: str
    num_foregrounds: int
    latents: bytes
    prompts: bytes


class CachedLoader:
    """Iterable of `CachedBatch` from a `cache_latents` folder, whose position can be saved and restored exactly.

    Like `LayerLoader`: iterating continues from the current position; with `repeat=False` one iteration runs
    (the rest of) one epoch; samples left in incomplete K groups at an epoch's end are dropped. The batch
    sequence is a function of the cache, (seed, epoch), batch_size, shuffle_buffer, foregrounds and the
    distributed rank and world size (shards are split across ranks as `LayerLoader` does).
    """

    def __init__(self, folder: str | Path, batch_size: int, seed: int = 0, shuffle_buffer: int = 64,
                 caption_dropout: float = 0.1, foregrounds: list[int] | None = None, repeat: bool = True):
        self.folder = Path(folder)
        if not (self.folder / CACHE_INFO).is_file():
            raise FileNotFoundError(f"{self.folder} is not a complete latent cache: no {CACHE_INFO}")
        if batch_size < 1 or shuffle_buffer < 0:
            raise ValueError(f"batch_size must be positive and shuffle_buffer not negative, "
                             f"got {batch_size}, {shuffle_buffer}")
        if not 0 <= caption_dropout <= 1:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        self.info: dict[str, Any] = json.loads((self.folder / CACHE_INFO).read_text())
        # Only finished shards: the glob leaves out `.partial` ones.
        self.urls = [str(p) for p in sorted(self.folder.glob("latents-*.tar"))]
        if not self.urls:
            raise ValueError(f"no latent shards in {self.folder}")
        self.empty_prompt = load_safetensors((self.folder / EMPTY_PROMPT).read_bytes())["embeds"].float()
        self.batch_size, self.seed, self.shuffle_buffer = batch_size, seed, shuffle_buffer
        self.caption_dropout, self.repeat = caption_dropout, repeat
        self.foregrounds = None if foregrounds is None else set(foregrounds)
        self.epoch = 0
        self.batches_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])

    def __iter__(self) -> Iterator[CachedBatch]:
        while True:
            yield from self._epoch()
            self.epoch += 1
            self.batches_in_epoch = 0
            if not self.repeat:
                return

    def _samples(self, raw: Iterator[dict[str, Any]]) -> Iterator[_Cached]:
        for sample in raw:
            k = int(json.loads(sample["json"])["num_foregrounds"])
            if self.foregrounds is None or k in self.foregrounds:
                yield _Cached(sample["__key__"], k, sample["latents.safetensors"], sample["prompts.safetensors"])

    def _groups(self) -> Iterator[list[_Cached]]:
        urls = list(self.urls)
        stages: list[Any] = []
        if self.shuffle_buffer:
            rank = wds.utils.pytorch_worker_info()[0]
            _rng(self.seed, self.epoch).shuffle(urls)  # the same on every rank, so ranks get disjoint shards
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                                      rng=_rng(self.seed, self.epoch, rank)))
        pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_node, wds.tarfile_to_samples(),
                                    *stages, self._samples,
                                    lambda samples: _group_by_foregrounds(samples, self.batch_size))
        return iter(pipeline)

    def _epoch(self) -> Iterator[CachedBatch]:
        fresh = self.batches_in_epoch == 0
        delivered = 0
        for index, group in enumerate(self._groups()):
            if index < self.batches_in_epoch:
                continue  # consumed before the saved position; its tensors are never decoded
            batch = self._decode(group)
            self.batches_in_epoch += 1
            delivered += 1
            yield batch
        if fresh and not delivered:
            raise ValueError(f"epoch {self.epoch} of {self.folder} gave no batch of {self.batch_size}")

    def _decode(self, group: list[_Cached]) -> CachedBatch:
        layout = Layout(group[0].num_foregrounds)
        latents, embeds = [], []
        for sample in group:
            layers = load_safetensors(sample.latents)
            latents.append(layout.pack({name: layers[name].float().unsqueeze(0) for name in layout.names})[0])
            prompts = load_safetensors(sample.prompts)["embeds"].float()
            if _rng(self.seed, self.epoch, sample.key).random() < self.caption_dropout:
                prompts = self.empty_prompt.expand_as(prompts).clone()
            embeds.append(prompts)
        return CachedBatch(layout, torch.stack(latents), torch.stack(embeds), [s.key for s in group])
