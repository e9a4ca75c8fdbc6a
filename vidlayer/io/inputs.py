"""Finding the raw inputs: a folder of videos with caption sidecars, or a manifest file.

Every video found becomes an `InputItem`, even a broken one: problems that show before a
video is opened (an unreadable caption file, a path outside the input root, a duplicate key)
are recorded on the item so that the build writes a manifest row for it instead of losing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from vidlayer.clip import InputItem

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class InputError(ValueError):
    """An --input that cannot be read at all (as opposed to one bad video inside it)."""


def discover(path: str | Path, root: str | Path | None = None) -> list[InputItem]:
    """List the inputs of a folder (searched recursively) or of a csv/jsonl/parquet manifest.

    Manifest paths are resolved against `root` (default: the manifest's folder) and may not
    leave it, so a manifest cannot make the build read arbitrary files.
    """
    path = Path(path)
    if path.is_dir():
        return _from_folder(path)
    if not path.exists():
        raise InputError(f"--input {path} does not exist")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _from_manifest(path, Path(root) if root else path.parent)
    raise InputError(f"--input {path} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")


def _from_folder(folder: Path) -> list[InputItem]:
    folder = folder.absolute()
    videos = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES and not p.is_dir() and not _hidden(p.relative_to(folder))
    )
    return [_with_sidecar(p, folder) for p in videos]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _with_sidecar(video: Path, folder: Path) -> InputItem:
    source = video.relative_to(folder).as_posix()
    base = dict(key=derive_key(source), path=str(video), source=source)
    text_file, json_file = video.with_suffix(".txt"), video.with_suffix(".json")
    try:
        if json_file.exists():
            data = json.loads(json_file.read_bytes().decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return InputItem(**base, **_captions(data))
        if text_file.exists():
            return InputItem(**base, caption=text_file.read_bytes().decode("utf-8").strip() or None)
    except UnicodeDecodeError:
        return InputItem(**base, reject_reason="caption_not_utf8", reject_message="caption sidecar is not valid UTF-8")
    except (ValueError, TypeError) as e:
        return InputItem(**base, reject_reason="caption_invalid", reject_message=f"caption sidecar: {e}")
    except OSError as e:
        return InputItem(**base, reject_reason="caption_unreadable", reject_message=f"caption sidecar: {e.strerror or e}")
    return InputItem(**base)


def _captions(data: dict[str, Any]) -> dict[str, Any]:
    """Normalise `caption`, `fg_caption` (a string or a list, one per layer) and `bg_caption`."""
    fg = data.get("fg_caption")
    if fg is None or fg == "":
        fg_list: list[str] = []
    elif isinstance(fg, str):
        fg_list = [fg]
    elif isinstance(fg, (list, tuple)) and all(isinstance(f, str) for f in fg):
        fg_list = list(fg)
    else:
        raise ValueError("fg_caption must be a string or a list of strings")
    caption, bg = data.get("caption"), data.get("bg_caption")
    for name, value in (("caption", caption), ("bg_caption", bg)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
    return dict(
        caption=(caption or "").strip() or None,
        fg_captions=tuple(f.strip() for f in fg_list if f.strip()),
        bg_caption=(bg or "").strip() or None,
    )


def _from_manifest(manifest: Path, root: Path) -> list[InputItem]:
    rows = _read_manifest_rows(manifest)
    root = Path(os.path.abspath(root))
    items: list[InputItem] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        source = row.get("path")
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"{manifest.name}: row {number} has no 'path'")
        source = source.strip()
        full = Path(os.path.normpath(root / source))
        base: dict[str, Any] = dict(path=str(full), source=source)
        given_key = row.get("key")
        key = str(given_key).strip() if given_key not in (None, "") else derive_key(source)
        try:
            captions = _captions(row)
        except ValueError as e:
            items.append(InputItem(key=key, **base, reject_reason="caption_invalid", reject_message=str(e)))
            continue
        problem = None
        if not full.is_relative_to(root):
            problem = ("path_outside_root", f"{source} resolves outside the input root {root}")
        elif not KEY_PATTERN.match(key):
            problem = ("invalid_key", f"key {key!r} must be 1-128 characters of A-Z a-z 0-9 _ -")
        elif key in seen:
            problem = ("duplicate_key", f"key {key!r} appears more than once in the manifest")
        if problem:
            # A rejected row still needs a unique key for its manifest row.
            key = f"{derive_key(source)}-row{number}" if key in seen or not KEY_PATTERN.match(key) else key
            items.append(InputItem(key=key, **base, **captions, reject_reason=problem[0], reject_message=problem[1]))
        else:
            items.append(InputItem(key=key, **base, **captions))
        seen.add(key)
    return items


def _read_manifest_rows(manifest: Path) -> list[dict[str, Any]]:
    suffix = manifest.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(manifest).to_pylist()
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            convert = pacsv.ConvertOptions(strings_can_be_null=True, column_types={"key": "string"})
            return pacsv.read_csv(manifest, convert_options=convert).to_pylist()
        rows = []
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise InputError(f"{manifest.name}: line {number} is not a JSON object")
                rows.append(row)
        return rows
    except InputError:
        raise
    except Exception as e:  # pyarrow, json and decoding errors all mean: not a usable manifest
        raise InputError(f"cannot read manifest {manifest.name}: {str(e).splitlines()[0]}") from None


def derive_key(source: str) -> str:
    """A stable, unique, WebDataset-safe key: the readable path plus a short hash of it."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(source).with_suffix(""))).strip("_")[:80] or "clip"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
