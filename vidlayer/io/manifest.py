"""The output manifest: one row per input and one per clip cut from it.

During a build, rows are appended to a journal (JSON lines) in commit blocks; the journal is
the build's source of truth for resuming. `manifest.parquet` is materialised from it at the
end of every run. See manifests/README.md for the columns.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vidlayer.clip import Clip, InputItem, Outcome, Status

SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "input" or "sample"
        ("input_key", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),  # written, dropped, failed
        ("stage", pa.string()),  # where it was dropped or failed
        ("reason", pa.string()),  # short stable code, e.g. too_static
        ("message", pa.string()),  # human explanation
        ("source", pa.string()),
        ("bytes", pa.int64()),  # the input file's size when it was read (input rows)
        ("span_start_s", pa.float64()),
        ("span_end_s", pa.float64()),
        ("caption", pa.string()),
        ("fg_captions", pa.list_(pa.string())),
        ("bg_caption", pa.string()),
        ("num_foregrounds", pa.int32()),
        ("frames", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("shard", pa.string()),  # relative to the output folder
        ("metrics", pa.map_(pa.string(), pa.float64())),
        ("timings", pa.map_(pa.string(), pa.float64())),
        ("pipeline", pa.string()),
        ("config_hash", pa.string()),
        ("finished_at", pa.float64()),  # unix time
    ]
)


def rows_for(item: InputItem, outcomes: list[Outcome], pipeline: str, config_hash: str) -> list[dict[str, Any]]:
    """The rows of one finished input: a row per clip cut from it, then the input's own row."""
    now = time.time()
    common = dict(input_key=item.key, source=item.source, pipeline=pipeline, config_hash=config_hash, finished_at=now)
    rows = [_sample_row(o, common) for o in outcomes if o.key != item.key]
    rows.append(_input_row(item, outcomes, common))
    return rows


def _sample_row(outcome: Outcome, common: dict[str, Any]) -> dict[str, Any]:
    row = dict(common, kind="sample", key=outcome.key, status=outcome.status.value, stage=outcome.stage,
               reason=outcome.reason, message=outcome.message)
    clip = outcome.clip
    if clip is not None:
        meta = (clip.sample or {}).get("json") or {}
        row.update(
            span_start_s=clip.span[0] if clip.span else None,
            span_end_s=clip.span[1] if clip.span else None,
            caption=clip.captions.full,
            fg_captions=list(clip.captions.foreground),
            bg_caption=clip.captions.background,
            num_foregrounds=meta.get("num_foregrounds"),
            frames=meta.get("frames"),
            width=meta.get("width"),
            height=meta.get("height"),
            fps=clip.fps or None,
            metrics=_finite(clip.metrics),
            timings=_finite(clip.timings),
        )
    return row


def _input_row(item: InputItem, outcomes: list[Outcome], common: dict[str, Any]) -> dict[str, Any]:
    """Written if any clip was written; otherwise the first clip's drop or failure speaks for it."""
    row = dict(common, kind="input", key=item.key, caption=item.caption, fg_captions=list(item.fg_captions),
               bg_caption=item.bg_caption, bytes=item.size)
    written = [o for o in outcomes if o.status is Status.WRITTEN]
    if written:
        row.update(status=Status.WRITTEN.value, message=f"{len(written)} of {len(outcomes)} clips written")
    else:
        first = next((o for o in outcomes if o.status is Status.FAILED), outcomes[0])
        row.update(status=first.status.value, stage=first.stage, reason=first.reason, message=first.message)
    clip: Clip | None = next((o.clip for o in outcomes if o.clip is not None and o.clip.info is not None), None)
    if clip is not None:
        info = clip.info
        row.update(frames=info.num_frames, width=info.width, height=info.height, fps=info.fps)
    timings: dict[str, float] = {}
    for o in outcomes:
        for stage, seconds in (o.clip.timings if o.clip else {}).items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    row["timings"] = timings
    return row


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v == v and abs(float(v)) != float("inf")}


def write_parquet(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write rows atomically: readers never see a half-written manifest."""
    path = Path(path)
    ordered = sorted(rows, key=lambda r: (r["input_key"], r["kind"] == "input", r["key"]))
    table = pa.Table.from_pylist([{**r, "metrics": _pairs(r.get("metrics")), "timings": _pairs(r.get("timings"))}
                                  for r in ordered], schema=SCHEMA)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _pairs(values: dict[str, float] | None) -> list[tuple[str, float]] | None:
    return None if values is None else sorted(values.items())


def manifest_files(folder: str | Path) -> list[Path]:
    """A build folder's manifests: manifest.parquet, or one per part of a build split with --part."""
    folder = Path(folder)
    whole = folder / "manifest.parquet"
    return [whole] if whole.exists() else sorted(folder.glob("manifest-part-*.parquet"))


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a manifest file, or of all the manifests of a build folder."""
    if Path(path).is_dir():
        return [row for part in manifest_files(path) for row in read_manifest(part)]
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        for column in ("metrics", "timings"):
            row[column] = dict(row[column]) if row[column] is not None else None
    return rows


@dataclass
class Commit:
    rows: list[dict[str, Any]]
    shard: str | None


class Journal:
    """Append-only commit log. One line per commit, so a torn last line is simply no commit."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> tuple[dict[str, Any] | None, list[Commit]]:
        """The header and the commits; drops a torn trailing line left by a crash."""
        if not self.path.exists():
            return None, []
        data = self.path.read_bytes()
        header, commits, good = None, [], 0
        for line in data.splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not line.endswith(b"\n"):
                break
            good += len(line)
            if record.get("type") == "header":
                header = record
            else:
                commits.append(Commit(rows=record["rows"], shard=record.get("shard")))
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return header, commits

    def write_header(self, header: dict[str, Any]) -> None:
        self._append({"type": "header", **header})

    def commit(self, rows: list[dict[str, Any]], shard: str | None = None) -> None:
        self._append({"type": "commit", "shard": shard, "rows": rows})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=float).encode() + b"\n"
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
