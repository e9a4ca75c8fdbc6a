"""WebDataset shards: atomic writing during a build, and safe reading for inspection.

Writing: samples go to `shard-NNNNNN.tar.part` through webdataset's ShardWriter. When a shard
is full, it is flushed to disk, its manifest rows are committed to the journal, and only then
is it renamed to `shard-NNNNNN.tar`. A crash leaves either a committed shard (the rename is
redone on resume) or an uncommitted `.part` (deleted on resume, its inputs redone), never a
half-written `.tar` and never a sample twice. All samples of one input go to one shard, so an
input is committed whole.

Reading: member names are checked before anything is used, so a crafted tar cannot name files
outside its folder (absolute paths, `..`, links or devices are refused).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import webdataset as wds

SHARD_PATTERN = "shard-%06d.tar"
SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")
PART_SUFFIX = ".part"


class UnsafeTarError(ValueError):
    """A tar member whose name or type could escape the folder it is read into."""


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
    """Refuse members that are not plain files or whose names could leave the folder."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not member.isfile():
        raise UnsafeTarError(f"tar member {name!r} is not a regular file (links and devices are refused)")
    if not name or name.startswith(("/", "\\")) or ".." in parts or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise UnsafeTarError(f"tar member {name!r} would escape its folder")


def read_shard(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield samples as {"__key__": key, "<ext>": bytes, ...} with `json` decoded to a dict.

    Grouping follows WebDataset's convention: the key is everything before the first dot of
    the file name (directories included), the rest is the member's extension.
    """
    sample: dict[str, Any] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            check_member(member)
            directory, _, filename = member.name.rpartition("/")
            stem, dot, extension = filename.partition(".")
            if not dot:
                continue
            key = f"{directory}/{stem}" if directory else stem
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            data = tar.extractfile(member).read()
            sample[extension] = json.load(io.BytesIO(data)) if extension == "json" else data
    if sample:
        yield sample
