"""WebDataset shards: atomic writing during a build, and safe reading for inspection.

Writing: samples go to `shard-NNNNNN.tar.part` through webdataset's ShardWriter. When a shard
is full, it is flushed to disk, its manifest rows are committed to the journal, and only then
is it renamed to `shard-NNNNNN.tar`. A crash leaves either a committed shard (the rename is
redone on resume) or an uncommitted `.part` (deleted on resume, its inputs redone), never a
half-written `.tar` and never a sample twice. All samples of one input go to one shard, so an
input is committed whole.

Reading: member names are checked before anything is used, so a crafted tar cannot name files
outside its folder or a URL (absolute paths, `..`, `:`, links, devices and sparse files are
refused). Samples stream one at a time and a member's declared size is checked before it is
read, so a small crafted tar cannot make a reader hold gigabytes. Layer names in a sample's
metadata are checked too (`layer_members`): they index the sample, whose `__key__` is any text.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import av
import numpy as np
import webdataset as wds

from vidlayer.io.video import VideoError, decode_video

SHARD_PATTERN = "shard-%06d.tar"
SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")
PART_SUFFIX = ".part"
# What one sample may hold in memory: far above a layered clip (a few MB a layer), far below a machine.
MAX_SAMPLE_BYTES = 1 << 30
MAX_JSON_BYTES = 1 << 20  # metadata grows several times over once decoded
LAYER_MEMBER_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # fullmatch: `$` would let a newline end it


class UnsafeTarError(ValueError):
    """A tar member whose name, type or size makes it unsafe to read."""


class SampleError(ValueError):
    """A sample whose metadata or layer members cannot be used; `reason` is a short stable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def stamp_sample(sample: dict[str, Any], pipeline: str, config_hash: str) -> dict[str, Any]:
    """Stamp the sample's metadata with the pipeline that made it and serialise it."""
    meta = {**sample["json"], "pipeline": pipeline, "config_hash": config_hash}
    return {**sample, "json": json.dumps(meta, sort_keys=True).encode()}


class ShardSink:
    """Writes samples into numbered shards and calls `on_commit(shard_name)` as each one closes.

    `on_commit` must make the shard's rows durable; the shard becomes visible (renamed from
    `.part`) only after it returns.
    """

    def __init__(self, folder: Path, start_index: int, max_samples: int, max_bytes: int,
                 on_commit: Callable[[str], None]):
        self.folder = folder
        self.next_index = start_index
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.on_commit = on_commit
        self.writer: wds.ShardWriter | None = None

    @property
    def current_name(self) -> str | None:
        """The final (committed) file name of the shard being written, relative to its folder."""
        if self.writer is None or self.writer.fname is None:
            return None
        return Path(self.writer.fname).name.removesuffix(PART_SUFFIX)

    def write_group(self, samples: list[dict[str, Any]]) -> str:
        """Write the samples of one input into a single shard; returns that shard's name."""
        if self.writer is None:
            # Rolling is decided here, per input, so ShardWriter's own limits are set out of reach.
            self.writer = wds.ShardWriter(
                str(self.folder / (SHARD_PATTERN + PART_SUFFIX)), maxcount=10**12, maxsize=float("inf"),
                start_shard=self.next_index, post=self._finish, verbose=0,
            )
        elif self.writer.count and (
            self.writer.count + len(samples) > self.max_samples or self.writer.size >= self.max_bytes
        ):
            self.writer.next_stream()
        for sample in samples:
            self.writer.write(sample)
        return self.current_name

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _finish(self, part_path: str) -> None:
        _fsync_file(part_path)
        final = part_path.removesuffix(PART_SUFFIX)
        self.on_commit(Path(final).name)
        os.replace(part_path, final)
        _fsync_dir(self.folder)
        self.next_index = int(SHARD_RE.match(Path(final).name).group(1)) + 1


def finish_or_discard_parts(folder: Path, committed: set[str]) -> None:
    """After a crash: complete the rename of committed shards, delete uncommitted ones."""
    for part in folder.glob("*" + PART_SUFFIX):
        final = part.with_name(part.name.removesuffix(PART_SUFFIX))
        if final.name in committed and not final.exists():
            os.replace(part, final)
        else:
            part.unlink()
    _fsync_dir(folder)


def shard_index(name: str) -> int:
    match = SHARD_RE.match(Path(name).name)
    if not match:
        raise ValueError(f"not a shard name: {name}")
    return int(match.group(1))


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse members that are not plain files, or whose names could leave the folder or be read as a URL.

    Sparse files are refused too: their holes read back as zeros, so a few bytes can declare gigabytes.
    """
    name = member.name
    if not member.isfile() or member.issparse():
        raise UnsafeTarError(f"tar member {name!r} is not a regular file (links, devices and sparse files "
                             f"are refused)")
    if not name or name.startswith("/") or ".." in PurePosixPath(name).parts or "\\" in name or ":" in name:
        raise UnsafeTarError(f"tar member {name!r} would escape its folder or name a URL")


def read_shard(path: str | Path, load: Callable[[str, str], bool] | None = None,
               max_sample_bytes: int = MAX_SAMPLE_BYTES) -> Iterator[dict[str, Any]]:
    """Yield samples one at a time as {"__key__": key, "<ext>": bytes, ...} with `json` decoded to a dict.

    Grouping follows WebDataset's convention: the key is everything before the first dot of
    the file name (directories included), the rest is the member's extension. A member that
    `load(key, extension)` declines is not read: its size in bytes stands in for it. Sizes are
    checked before reading: a sample may hold `max_sample_bytes`, its metadata MAX_JSON_BYTES.
    Only uncompressed tars are read (vidlayer writes no other): decompression would let a small
    file unfold into anything, even inside the tar headers.
    """
    try:
        tar = tarfile.open(path, "r:")
    except tarfile.ReadError as e:
        raise tarfile.ReadError(f"not an uncompressed tar ({e})") from None
    sample: dict[str, Any] = {}
    held = 0
    with tar:
        while (member := tar.next()) is not None:
            tar.members.clear()  # each header is used once, in order; keeping them all grows with the shard
            check_member(member)
            directory, _, filename = member.name.rpartition("/")
            stem, dot, extension = filename.partition(".")
            if not dot:
                continue
            key = f"{directory}/{stem}" if directory else stem
            if sample and sample["__key__"] != key:
                yield sample
                sample, held = {}, 0
            sample["__key__"] = key
            if load is not None and not load(key, extension):
                sample[extension] = member.size
                continue
            held += member.size
            if held > max_sample_bytes:
                raise UnsafeTarError(f"sample {key!r} reaches {held:,} bytes with {member.name!r}, more than the "
                                     f"{max_sample_bytes:,} bytes a sample may hold; refused before reading it")
            if extension == "json" and member.size > MAX_JSON_BYTES:
                raise UnsafeTarError(f"tar member {member.name!r} declares {member.size:,} bytes of metadata, more "
                                     f"than the {MAX_JSON_BYTES:,} allowed; refused before reading it")
            data = tar.extractfile(member).read()
            sample[extension] = _metadata_of(key, data) if extension == "json" else data
    if sample:
        yield sample


def parse_metadata(data: bytes) -> dict[str, Any]:
    """A sample's `json` member as a dict; bad or too deeply nested JSON, a list or a number is refused."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise SampleError("bad_json", f"metadata is not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(meta, dict):
        raise SampleError("bad_json", f"metadata must be a JSON object, not {_shown(meta)}")
    return meta


def _metadata_of(key: str, data: bytes) -> dict[str, Any]:
    try:
        return parse_metadata(data)
    except SampleError as e:
        raise SampleError(e.reason, f"sample {key!r}: {e}") from None


def layer_members(meta: Mapping[str, Any], sample: Mapping[str, Any]) -> dict[str, str]:
    """The member of `sample` holding each layer, by role: full, background, fg0, alpha0, fg1, ...

    The names come from the metadata and index the sample, so each must be a plain member
    extension (`fg0.mp4`) held as bytes: `__key__`, any text, even a URL, must never reach a decoder.
    """
    layers = meta.get("layers")
    if not isinstance(layers, Mapping):
        raise SampleError("bad_layers", f"metadata names no layers (found {_shown(layers)})")
    foreground, alpha = layers.get("foreground"), layers.get("alpha")
    if not (isinstance(foreground, list) and isinstance(alpha, list) and 0 < len(foreground) == len(alpha)):
        raise SampleError("bad_layers", f"layers need one alpha per foreground, at least one: found foreground "
                                        f"{_shown(foreground)} and alpha {_shown(alpha)}")
    roles = {"full": layers.get("full"), "background": layers.get("background")}
    for i, (colour, matte) in enumerate(zip(foreground, alpha)):
        roles[f"fg{i}"], roles[f"alpha{i}"] = colour, matte
    for role, name in roles.items():
        if not isinstance(name, str) or not LAYER_MEMBER_RE.fullmatch(name) or name.startswith("__"):
            raise SampleError("bad_layers", f"layer {role} is {_shown(name)}, not a member extension like fg0.mp4")
    missing = sorted({name for name in roles.values() if not isinstance(sample.get(name), bytes)})
    if missing:
        raise SampleError("missing_member", f"no {', '.join(missing)}")
    return roles


def decode_layers(members: Mapping[str, bytes], max_frames: int | None = None) -> dict[str, np.ndarray]:
    """Decode layer videos by role (alphas to grey), at most `max_frames` each.

    Layers of one clip share frames and size, so layers that differ are refused here rather
    than misaligned later; a member that does not decode names its layer.
    """
    videos = {}
    for role, data in members.items():
        try:
            videos[role] = decode_video(data, grey=role.startswith("alpha"), max_frames=max_frames)
        except (VideoError, av.error.FFmpegError, IndexError, ValueError) as e:  # IndexError: no video stream
            raise SampleError("decode_error", f"layer {role} does not decode ({str(e)[:120]})") from None
    shapes = {role: video.shape[:3] for role, video in videos.items()}
    if len(set(shapes.values())) > 1:
        raise SampleError("mismatched_layers", "layers differ in frames or size: " + ", ".join(
            f"{role} {'x'.join(map(str, shape))}" for role, shape in shapes.items()))
    return videos


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
