"""Finding the raw inputs: a folder of videos with caption sidecars, or a manifest file.

Every video found becomes an `InputItem`, even a broken one: problems that show before a
video is opened (an unreadable caption file, a name UTF-8 cannot hold, a hidden file, a path or
link leading outside the input root, a duplicate key) are recorded on the item so that the build
writes a manifest row for it instead of losing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidlayer.clip import InputItem

if TYPE_CHECKING:
    import pyarrow as pa

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TEXT_COLUMNS = ("path", "key", "caption", "fg_caption", "bg_caption")  # the manifest columns read
STATE_DIR = ".vidlayer"  # a build's own state (build.STATE_DIR), skipped if an output lies inside the input


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
    """Walk the folder with one listing per directory and one stat per video, never opening a video.

    Links to directories are not followed: one leaving the folder would read outside it, one inside
    it only lists videos found anyway, and neither can loop.
    """
    folder = folder.absolute()
    real_root = os.path.realpath(folder)
    found: list[tuple[list[str], InputItem]] = []
    pending = [(str(folder), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = {entry.name: entry for entry in listing}
        except OSError as e:
            if not prefix:
                raise InputError(f"cannot list --input {_escaped(directory)}: {e.strerror or e}") from None
            continue  # an unreadable subfolder, as rglob did
        for name, entry in entries.items():
            if _is_dir(entry, follow_symlinks=False):
                if name != STATE_DIR:
                    pending.append((entry.path, f"{prefix}{name}/"))
            elif name.lower().endswith(VIDEO_SUFFIXES) and not _is_dir(entry):
                source = prefix + name
                found.append((source.split("/"), _folder_item(entry, source, entries, real_root)))
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def _folder_item(video: os.DirEntry[str], source: str, siblings: dict[str, os.DirEntry[str]],
                 real_root: str) -> InputItem:
    """Checks in the order a user fixes them: the name, then where the file is, then its captions."""
    if not _is_utf8(source):
        shown = _escaped(source)
        return InputItem(key=derive_key(source), path=_escaped(video.path), source=shown,
                         reject_reason="path_not_utf8",
                         reject_message=f"the path {shown} is not valid UTF-8; rename it to include it")
    base: dict[str, Any] = dict(key=derive_key(source), path=video.path, source=source)
    if any(part.startswith(".") for part in source.split("/")):
        return InputItem(**base, reject_reason="hidden_file",
                         reject_message="hidden files are not read; rename it to include it")
    if video.is_symlink() and not _inside(os.path.realpath(video.path), real_root):
        return InputItem(**base, reject_reason="path_outside_root",
                         reject_message=f"{source} is a link to a file outside the input folder")
    base["size"] = _size(video)
    stem = os.path.splitext(video.name)[0]
    sidecar = siblings.get(stem + ".json") or siblings.get(stem + ".txt")
    return _with_sidecar(base, sidecar, real_root) if sidecar else InputItem(**base)


def _with_sidecar(base: dict[str, Any], sidecar: os.DirEntry[str], real_root: str) -> InputItem:
    if sidecar.is_symlink() and not _inside(os.path.realpath(sidecar.path), real_root):
        return InputItem(**base, reject_reason="path_outside_root",
                         reject_message=f"caption sidecar {sidecar.name} is a link to a file outside the input folder")
    try:
        text = Path(sidecar.path).read_bytes().decode("utf-8")
        if sidecar.name.endswith(".txt"):
            return InputItem(**base, caption=text.strip() or None)
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return InputItem(**base, **_captions(data))
    except UnicodeDecodeError:
        return InputItem(**base, reject_reason="caption_not_utf8", reject_message="caption sidecar is not valid UTF-8")
    except RecursionError:  # json.loads of "[[[[..." stops at Python's recursion limit
        return InputItem(**base, reject_reason="caption_invalid",
                         reject_message="caption sidecar: JSON nested too deeply")
    except (ValueError, TypeError) as e:
        return InputItem(**base, reject_reason="caption_invalid", reject_message=f"caption sidecar: {e}")
    except OSError as e:
        return InputItem(**base, reject_reason="caption_unreadable", reject_message=f"caption sidecar: {e.strerror or e}")


def _is_dir(entry: os.DirEntry[str], follow_symlinks: bool = True) -> bool:
    """An entry that cannot be stat'ed counts as a file: named like a video, it gets a row and fails when opened."""
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:
        return False


def _size(video: os.DirEntry[str]) -> int | None:
    try:
        return video.stat().st_size
    except OSError:
        return None


def _inside(path: str, folder: str) -> bool:
    """Strictly below `folder`: the folder itself is not an input."""
    return path.startswith(os.path.join(folder, ""))


def _is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (undecodable file-name bytes, a JSON "\\ud800"), which
    the parquet manifest cannot store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    """`text` storable as UTF-8: undecodable bytes written as \\xff, other lone surrogates as \\ud800."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    for name, value in (("caption", caption), ("bg_caption", bg), *(("fg_caption", f) for f in fg_list)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        if value and not _is_utf8(value):
            raise ValueError(f"{name} is not valid UTF-8 text: {_escaped(value)[:80]}")
    return dict(
        caption=(caption or "").strip() or None,
        fg_captions=tuple(f.strip() for f in fg_list if f.strip()),
        bg_caption=(bg or "").strip() or None,
    )


def _from_manifest(manifest: Path, root: Path) -> list[InputItem]:
    rows = _read_manifest_rows(manifest)
    root_dir = os.path.abspath(root)
    real_root = os.path.realpath(root_dir)
    real_dirs: dict[str, str] = {}
    items: list[InputItem] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        source = row.get("path")
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"{manifest.name}: row {number} has no 'path'")
        source = source.strip()
        given_key = row.get("key")
        key = str(given_key).strip() if given_key not in (None, "") else derive_key(source)
        fields, problem = _manifest_fields(source, row, root_dir, real_root, real_dirs)
        if problem is None and not KEY_PATTERN.match(key):
            problem = ("invalid_key", f"key {key!r} must be 1-128 characters of A-Z a-z 0-9 _ -")
        elif problem is None and key in seen:
            problem = ("duplicate_key", f"key {key!r} appears more than once in the manifest")
        if problem:
            # A rejected row still needs a unique key for its manifest row.
            key = f"{derive_key(source)}-row{number}" if key in seen or not KEY_PATTERN.match(key) else key
            fields.update(reject_reason=problem[0], reject_message=problem[1])
        items.append(InputItem(key=key, **fields))
        seen.add(key)
    return items


def _manifest_fields(source: str, row: dict[str, Any], root: str, real_root: str,
                     real_dirs: dict[str, str]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A row's InputItem fields and its first problem: a path that cannot be stored or leaves the root
    (named or through a link), or a bad caption."""
    full = os.path.normpath(os.path.join(root, source))
    if not _is_utf8(source):
        shown = _escaped(source)
        problem = ("path_not_utf8", f"the path {shown} is not valid UTF-8")
        return dict(path=_escaped(full), source=shown), problem
    fields: dict[str, Any] = dict(path=full, source=source)
    try:
        fields.update(_captions(row))
    except ValueError as e:
        return fields, ("caption_invalid", str(e))
    if _inside(full, root):
        inside, size = _locate(full, real_root, real_dirs)
        if inside:
            return dict(fields, size=size), None
    return fields, ("path_outside_root", f"{source} resolves outside the input root {_escaped(root)}")


def _locate(path: str, real_root: str, real_dirs: dict[str, str]) -> tuple[bool, int | None]:
    """Whether the real file is inside the real root, and its size: one lstat for a plain file, as the
    real paths of folders are cached. A file outside is not looked at."""
    folder, name = os.path.split(path)
    if folder not in real_dirs:
        real_dirs[folder] = os.path.realpath(folder)
    real = os.path.join(real_dirs[folder], name)
    try:
        info = os.lstat(real)
        if stat.S_ISLNK(info.st_mode):
            real = os.path.realpath(real)
            if not _inside(real, real_root):
                return False, None
            info = os.stat(real)
    except OSError:  # missing: the row fails when its video is opened
        return _inside(real, real_root), None
    return _inside(real, real_root), info.st_size


def _read_manifest_rows(manifest: Path) -> list[dict[str, Any]]:
    suffix = manifest.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _text_rows(pq.read_table(manifest))
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            convert = pacsv.ConvertOptions(strings_can_be_null=True, column_types={"key": "string"})
            return _text_rows(pacsv.read_csv(manifest, convert_options=convert))
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


def _text_rows(table: pa.Table) -> list[dict[str, Any]]:
    """An Arrow table's rows. Arrow reads a text column with one non-UTF-8 cell as bytes: decoding it
    cell by cell, bad bytes kept as surrogates, rejects that row alone rather than the whole column."""
    import pyarrow as pa

    binary = [f.name for f in table.schema if f.name in TEXT_COLUMNS and f.type in (pa.binary(), pa.large_binary())]
    rows = table.to_pylist()
    for row in rows:
        for name in binary:
            if row[name] is not None:
                row[name] = row[name].decode("utf-8", "surrogateescape")
    return rows


def derive_key(source: str) -> str:
    """A stable, unique, WebDataset-safe key: the readable path plus a short hash of it."""
    path = Path(source)
    readable = str(path.with_suffix("")) if path.name else source  # "/" and "." have no name to strip
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", readable).strip("_")[:80] or "clip"
    # surrogatepass: a name with undecodable bytes gets a key too; valid text hashes as it always did.
    return f"{stem}-{hashlib.sha1(source.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
