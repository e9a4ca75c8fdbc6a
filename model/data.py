"""Streaming training batches from VidLayer WebDataset shards, with a resumable position.

A sample becomes named layer videos in `Layout` order (colour in [-1, 1], alpha in [0, 1])
and one prompt per slot. Samples are batched by foreground count K, because a packed
sequence needs a single Layout per batch.

Reading, shuffling, filtering and K-grouping work on the still-compressed members; video is
decoded only for batches that are delivered. That keeps workers busy with useful decoding and
lets a resumed loader fast-forward to its saved position without decoding what it skips.

Resume guarantee: the batch sequence is a function of the shard list, the config, the epoch,
the number of streams (max(1, num_workers)) and the distributed rank and world size. Every
random choice is seeded from (seed, epoch, ...): shard order, the sample shuffle of each
worker, and each sample's crop and caption dropout. Worker streams are merged in a fixed
round-robin order, not in arrival order. So `load_state_dict(state_dict())` on a new loader
continues with exactly the batch the old one would have delivered next, same keys, crops and
dropped captions, as long as the shards, config, worker count and world size are unchanged.
With another worker count the loader resumes in the same epoch, having skipped as many
batches, but not the same ones. Under distributed training every rank has its own position:
save each rank's state. Samples left in incomplete K groups at an epoch's end are dropped.

Broken samples (unreadable metadata, missing or undecodable layers, layers that do not line
up) are skipped with a warning and counted by reason in `LayerLoader.skipped`; `max_skipped`
turns too many of them in one epoch into an error. Shard specs are local paths unless
`allowed_schemes` names a URL scheme: a data spec alone must not reach the network or run
a shell command (`pipe:`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from vidlayer.io.shards import SampleError, decode_layers, layer_members, parse_metadata

from .layout import MAX_FOREGROUNDS, Layout
from .runs import ConfigError

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DataConfig:
    """What to read and how to turn it into batches; `shuffle_buffer=0` also keeps shard order."""

    shards: str | list[str]
    height: int
    width: int
    batch_size: int
    num_frames: int = 17
    fps: float = 16.0
    random_crop: bool = True
    shuffle_buffer: int = 64
    seed: int = 0
    caption_dropout: float = 0.1
    slot_dropout: float = 0.0
    max_foregrounds: int = 4
    foregrounds: list[int] | None = None
    split: Literal["all", "train", "holdout"] = "all"  # held-out clips: a fixed share, chosen by key hash
    holdout: float = 0.1
    num_workers: int = 0
    repeat: bool = True
    alpha_only: bool = False  # decode only the mattes (stage 1 trains on nothing else)
    max_skipped: int | None = 1000  # skips for broken data (DATA_FAULTS) an epoch may have; None: no limit
    allowed_schemes: tuple[str, ...] = ()  # URL schemes shards may use, e.g. [https]; pipe runs a shell command

    def __post_init__(self) -> None:
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4n+1 (the VAE's temporal stride), got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.height < 1 or self.width < 1 or self.batch_size < 1:
            raise ValueError(f"height, width and batch_size must be positive, got "
                             f"{self.height}, {self.width}, {self.batch_size}")
        if self.shuffle_buffer < 0 or self.num_workers < 0:
            raise ValueError("shuffle_buffer and num_workers must not be negative")
        for name in ("caption_dropout", "slot_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.max_foregrounds <= MAX_FOREGROUNDS:
            raise ValueError(f"max_foregrounds must be in 1..{MAX_FOREGROUNDS}, got {self.max_foregrounds}")
        if self.split not in ("all", "train", "holdout"):
            raise ValueError(f"split must be 'all', 'train' or 'holdout', got {self.split!r}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.foregrounds is not None and not all(1 <= k <= MAX_FOREGROUNDS for k in self.foregrounds):
            raise ValueError(f"foregrounds must be counts in 1..{MAX_FOREGROUNDS}, got {self.foregrounds}")
        if self.max_skipped is not None and self.max_skipped < 0:
            raise ValueError(f"max_skipped must not be negative, got {self.max_skipped}")
        if isinstance(self.allowed_schemes, str) or not all(
                isinstance(s, str) and s == s.lower() for s in self.allowed_schemes):
            raise ValueError(f"allowed_schemes must be a list of lower-case URL schemes, got {self.allowed_schemes!r}")


@dataclass
class LayerSample:
    """One clip: videos named by `Layout.names`, prompts in `Layout.prompt_names` order."""

    key: str
    videos: dict[str, torch.Tensor]
    prompts: list[str]
    num_foregrounds: int

    @property
    def layout(self) -> Layout:
        return Layout(self.num_foregrounds)


@dataclass
class LayerBatch:
    """Samples sharing one Layout: videos [B, 3 or 1, T, H, W], prompts [B][num_prompts].

    B is the configured batch size, less only when a sample of the batch failed to decode:
    refilling it would make the batch depend on decoding, which resuming skips.
    """

    layout: Layout
    videos: dict[str, torch.Tensor]
    prompts: list[list[str]]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def expand_shards(shards: str | Sequence[str], allowed_schemes: Collection[str] = ()) -> list[str]:
    """Shard URLs from paths, brace patterns, folders (their sorted shard-*.tar) or URLs.

    A folder without shards is also looked into for `shards/`, so a `vidlayer build` output
    folder works. A URL (`https://...`, `pipe:...`, schemes as WebDataset reads them) passes
    only with its scheme in `allowed_schemes`: a data spec, perhaps copied from elsewhere,
    must not reach the network or run a command unless the user said so.
    """
    patterns = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    if not patterns:
        raise ValueError("no shard patterns given")
    urls: list[str] = []
    for pattern in map(str, patterns):
        found, missing = [], []
        for item in wds.shardlists.expand_urls(pattern):
            scheme = urlparse(item).scheme
            if scheme and scheme not in allowed_schemes:
                kind = "runs a shell command" if scheme == "pipe" else "is a URL"
                raise ValueError(f"shard {item!r} {kind} ({scheme}:); only local paths are read unless "
                                 f"data.allowed_schemes names its scheme, e.g. --set data.allowed_schemes=[{scheme}]")
            if scheme:
                found.append(item)
            elif os.path.isdir(item):
                folder = Path(item)
                tars = sorted(folder.glob("shard-*.tar")) or sorted(folder.glob("shards/**/shard-*.tar"))
                found += map(str, tars)
            elif os.path.isfile(item):
                found.append(item)
            else:
                missing.append(item)
        if not found:
            raise ValueError(f"no shards found for {pattern!r}")
        if missing:
            raise ValueError(f"{len(missing)} shards named by {pattern!r} do not exist, e.g. {missing[0]}")
        urls += found
    return urls


def frame_indices(source_fps: float, fps: float, num_frames: int, start: int = 0) -> list[int]:
    """Source frame numbers that sample a clip recorded at `source_fps` at `fps`."""
    step = source_fps / fps
    return [start + math.floor(i * step + 1e-6) for i in range(num_frames)]


# Skip reasons that mean broken data, as opposed to samples the config leaves out (split,
# foreground counts, clips too short for num_frames at fps); `max_skipped` counts only these.
DATA_FAULTS = frozenset({"bad_json", "bad_layers", "missing_member", "decode_error", "mismatched_layers",
                         "unreadable_shard"})


class BrokenDataError(ConfigError):
    """More broken samples in an epoch than `max_skipped` allows: the data, or the limit, needs fixing."""


class _Skip(Exception):
    """A sample left out; `reason` keys the loader's `skipped` counter."""

    def __init__(self, reason: str, message: str = "", warn: bool = True):
        super().__init__(message or reason)
        self.reason = reason
        self.warn = warn


@dataclass
class _Encoded:
    """A sample that passed the header checks; members are still mp4 bytes, by layer name."""

    key: str
    fps: float
    frames: int
    members: dict[str, bytes]
    prompts: list[str]

    @property
    def num_foregrounds(self) -> int:
        return (len(self.members) - 2) // 2


class _Item(NamedTuple):
    """What a worker sends: a batch (None if none of its samples decoded) or its end."""

    worker: int
    batch: LayerBatch | None
    skipped: Counter
    done: bool = False


def _rng(*parts: Any) -> random.Random:
    # String seeds hash with SHA-512, so they agree across processes and Python runs.
    return random.Random(":".join(map(str, parts)))


def in_holdout(key: str, holdout: float) -> bool:
    """Whether a clip is held out: a hash of its key, so the split is stable across runs and shards."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") < holdout * 2**64


def _read_header(sample: dict[str, Any], config: DataConfig) -> _Encoded:
    if config.split != "all" and in_holdout(sample["__key__"], config.holdout) != (config.split == "holdout"):
        raise _Skip("other_split", warn=False)
    if "json" not in sample:
        raise _Skip("missing_member", "no json member")
    try:
        meta = parse_metadata(sample["json"])
        k = int(meta["num_foregrounds"])
        fps, frames = float(meta["fps"]), int(meta["frames"])
        if k < 1 or not 0 < fps < math.inf:
            raise ValueError(f"num_foregrounds {k}, fps {fps}")
        if k > config.max_foregrounds:
            raise _Skip("too_many_foregrounds", warn=False)
        if config.foregrounds is not None and k not in config.foregrounds:
            raise _Skip("foregrounds_filtered", warn=False)
        # Layer names index the sample: `layer_members` lets through only checked member names.
        members = layer_members(meta, sample)
        if len(members) != 2 + 2 * k:
            raise SampleError("bad_layers", f"{len(members) // 2 - 1} foreground layers, num_foregrounds {k}")
        captions = meta["captions"]
        foreground = list(captions["foreground"])
        if len(foreground) != k:
            raise ValueError(f"{len(foreground)} foreground captions for {k} foregrounds")
        prompts = [text or "" for text in (captions["full"], captions.get("background"), *foreground)]
        if not all(isinstance(text, str) for text in prompts):
            raise TypeError("captions must be text")
    except SampleError as e:
        raise _Skip(e.reason, str(e)) from None
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise _Skip("bad_json", f"unreadable metadata ({e!r})") from None
    needed = frame_indices(fps, config.fps, config.num_frames)[-1] + 1
    if needed > frames:
        raise _Skip("too_short", f"{frames} frames at {fps:g} fps; {config.num_frames} frames "
                                 f"at {config.fps:g} fps need {needed}")
    return _Encoded(sample["__key__"], fps, frames, {role: sample[name] for role, name in members.items()}, prompts)


def _count_skip(skipped: Counter, key: str | None, skip: _Skip) -> None:
    skipped[skip.reason] += 1
    if skip.warn:
        logger.warning("skipping sample %s: %s", key, skip)


def _headers(samples: Iterator[dict[str, Any]], config: DataConfig, skipped: Counter) -> Iterator[_Encoded]:
    for sample in samples:
        try:
            yield _read_header(sample, config)
        except _Skip as skip:
            _count_skip(skipped, sample.get("__key__"), skip)


def _group_by_foregrounds(samples: Iterator[_Encoded], batch_size: int) -> Iterator[list[_Encoded]]:
    groups: dict[int, list[_Encoded]] = defaultdict(list)
    for sample in samples:
        group = groups[sample.num_foregrounds]
        group.append(sample)
        if len(group) == batch_size:
            yield group
            groups[sample.num_foregrounds] = []


def _skip_shard(skipped: Counter, error: Exception) -> bool:
    skipped["unreadable_shard"] += 1
    logger.warning("skipping the rest of a shard: %r", error)
    return True


def _crop_box(h: int, w: int, config: DataConfig, rng: random.Random) -> tuple[tuple[int, int], int, int]:
    """Size that covers (height, width) with the short side scaled, and the crop's top-left."""
    scale = max(config.height / h, config.width / w)
    size = (max(config.height, round(h * scale)), max(config.width, round(w * scale)))
    spare = (size[0] - config.height, size[1] - config.width)
    if config.random_crop:
        return size, rng.randint(0, spare[0]), rng.randint(0, spare[1])
    return size, spare[0] // 2, spare[1] // 2


def _load_sample(encoded: _Encoded, config: DataConfig, rng: random.Random) -> LayerSample:
    """Decode, resample in time, resize and crop (one window for all layers: they stay aligned), drop captions.

    Raises `_Skip` for layers that do not decode, differ in frames or size, or end early.
    """
    span = frame_indices(encoded.fps, config.fps, config.num_frames)[-1] + 1
    start = rng.randint(0, encoded.frames - span) if config.random_crop else (encoded.frames - span) // 2
    indices = frame_indices(encoded.fps, config.fps, config.num_frames, start)
    wanted = {name: data for name, data in encoded.members.items() if not config.alpha_only or name.startswith("alpha")}
    try:
        # Decoding stops at the last frame used: the rest of the clip is never decoded.
        frames = decode_layers(wanted, max_frames=indices[-1] + 1)
    except SampleError as e:
        raise _Skip(e.reason, str(e)) from None
    available = len(next(iter(frames.values())))
    if indices[-1] >= available:
        raise _Skip("decode_error", f"{available} frames decoded, {indices[-1] + 1} needed "
                                    f"(the metadata says {encoded.frames})")
    size, top, left = _crop_box(*next(iter(frames.values())).shape[1:3], config, rng)
    videos = {}
    for name, video in frames.items():
        clip = torch.from_numpy(video[indices])
        clip = (clip.unsqueeze(1) if clip.ndim == 3 else clip.permute(0, 3, 1, 2)).float()
        if size != clip.shape[-2:]:
            clip = F.interpolate(clip, size=size, mode="bilinear", antialias=True, align_corners=False)
        clip = clip[..., top:top + config.height, left:left + config.width]
        clip = clip / 255 if name.startswith("alpha") else clip / 127.5 - 1
        videos[name] = clip.clamp(-1, 1).transpose(0, 1).contiguous()
    if rng.random() < config.caption_dropout:
        prompts = [""] * len(encoded.prompts)
    else:
        prompts = ["" if rng.random() < config.slot_dropout else p for p in encoded.prompts]
    return LayerSample(encoded.key, videos, prompts, encoded.num_foregrounds)


def _collate(samples: Sequence[LayerSample]) -> LayerBatch:
    """Stack samples of one Layout."""
    layout = samples[0].layout
    if any(s.layout != layout for s in samples):
        raise ValueError("a batch must have a single foreground count")
    videos = {name: torch.stack([s.videos[name] for s in samples]) for name in layout.names
              if name in samples[0].videos}
    return LayerBatch(layout, videos, [s.prompts for s in samples], [s.key for s in samples])


def _identity(item: _Item) -> _Item:
    return item


class LayerDataset(IterableDataset):
    """One epoch of K-grouped batches for the calling DataLoader worker (or the main process).

    `start[w]` batches of worker w are fast-forwarded without decoding. Yields `_Item`s,
    ending with a `done` one; `LayerLoader` merges the workers' items in a fixed order.
    """

    def __init__(self, config: DataConfig, urls: list[str], epoch: int, start: list[int]):
        super().__init__()
        self.config, self.urls, self.epoch, self.start = config, urls, epoch, start

    def _encoded_batches(self, skipped: Counter) -> Iterator[list[_Encoded]]:
        config = self.config
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        urls = list(self.urls)
        stages: list[Any] = []
        if config.shuffle_buffer:
            # Every rank draws the same order, so split_by_node hands out disjoint shards.
            _rng(config.seed, self.epoch).shuffle(urls)
            stages.append(wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer,
                                      rng=_rng(config.seed, self.epoch, rank, worker)))
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker,
            wds.tarfile_to_samples(handler=partial(_skip_shard, skipped)), *stages,
            partial(_headers, config=config, skipped=skipped),
            partial(_group_by_foregrounds, batch_size=config.batch_size),
        )
        return iter(pipeline)

    def __iter__(self) -> Iterator[_Item]:
        worker = wds.utils.pytorch_worker_info()[2]
        skipped: Counter = Counter()
        for index, group in enumerate(self._encoded_batches(skipped)):
            if index < self.start[worker]:
                skipped.clear()  # counted by the run that delivered these batches
                continue
            samples = []
            for encoded in group:
                try:
                    samples.append(_load_sample(encoded, self.config, _rng(self.config.seed, self.epoch, encoded.key)))
                except _Skip as skip:
                    _count_skip(skipped, encoded.key, skip)
            yield _Item(worker, _collate(samples) if samples else None, Counter(skipped))
            skipped.clear()
        yield _Item(worker, None, skipped, done=True)


class LayerLoader:
    """Iterable of `LayerBatch` whose position can be saved and restored exactly.

    Iterating continues from the current position; with `repeat=False` one iteration runs
    (the rest of) one epoch. `skipped` counts samples left out, by reason, since creation.
    """

    def __init__(self, config: DataConfig):
        self.config = config
        self.urls = expand_shards(config.shards, config.allowed_schemes)
        self.epoch = 0
        self.worker_batches = [0] * self.num_streams
        self.skipped: Counter[str] = Counter()

    @property
    def num_streams(self) -> int:
        return max(1, self.config.num_workers)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_in_epoch": sum(self.worker_batches), "seed": self.config.seed,
                "worker_batches": list(self.worker_batches)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.config.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader has seed {self.config.seed}")
        counts = state.get("worker_batches")
        if counts is None or len(counts) != self.num_streams:
            logger.warning("resuming with %d streams from a position saved with %s: same epoch and batch "
                           "count, but not the same batches", self.num_streams, len(counts) if counts else "?")
            total = state["batches_in_epoch"]
            counts = [total // self.num_streams + (w < total % self.num_streams) for w in range(self.num_streams)]
        self.epoch = int(state["epoch"])
        self.worker_batches = [int(c) for c in counts]

    def __iter__(self) -> Iterator[LayerBatch]:
        while True:
            yield from self._epoch()
            self.epoch += 1
            self.worker_batches = [0] * self.num_streams
            if not self.config.repeat:
                return

    def _items(self) -> Iterator[_Item]:
        dataset = LayerDataset(self.config, self.urls, self.epoch, list(self.worker_batches))
        if not self.config.num_workers:
            return iter(dataset)
        return iter(DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers, collate_fn=_identity))

    def _epoch(self) -> Iterator[LayerBatch]:
        """Merge worker streams round-robin by batch count, whatever order their items arrive in."""
        fresh = sum(self.worker_batches) == 0
        delivered = 0
        broken: Counter[str] = Counter()
        items = self._items()
        pending: list[deque[_Item]] = [deque() for _ in range(self.num_streams)]
        active = set(range(self.num_streams))
        while active:
            worker = min(active, key=lambda w: (self.worker_batches[w], w))
            while not pending[worker]:
                item = next(items)
                pending[item.worker].append(item)
            item = pending[worker].popleft()
            self.skipped.update(item.skipped)
            broken.update({reason: n for reason, n in item.skipped.items() if reason in DATA_FAULTS})
            self._check_broken(broken)
            if item.done:
                active.discard(worker)
                continue
            self.worker_batches[worker] += 1
            if item.batch is not None:
                delivered += 1
                yield item.batch
        if fresh and not delivered:
            raise ValueError(f"epoch {self.epoch} of {self.config.shards!r} gave no batch of "
                             f"{self.config.batch_size}; skipped samples: {dict(self.skipped)}")

    def _check_broken(self, broken: Counter[str]) -> None:
        """Stop once an epoch has skipped more broken samples than `max_skipped` allows."""
        limit = self.config.max_skipped
        if limit is not None and broken.total() > limit:
            reasons = ", ".join(f"{reason} {n}" for reason, n in broken.most_common())
            raise BrokenDataError(f"{broken.total()} skips for broken data in epoch {self.epoch} of "
                                  f"{self.config.shards!r} ({reasons}), more than data.max_skipped={limit}; "
                                  f"the warnings above name them: fix or drop them, or raise the limit")
