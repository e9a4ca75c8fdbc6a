"""`vidlayer inspect`: what is inside a shard, as a table and as a contact sheet.

A shard may be large or crafted, so it is read one sample at a time and at most twice: once
for the metadata of the samples listed (the rest are only counted), once for the members of
the sample rendered. Metadata is shown as found, "?" where a field is not what vidlayer writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from vidlayer.io.shards import decode_layers, layer_members, read_shard
from vidlayer.render import contact_sheet, layer_rows, save_png

TABLE_METRICS = ("quality_composite_error", "quality_alpha_coverage", "quality_alpha_flicker", "quality_confidence")
METRIC_LABELS = dict(zip(TABLE_METRICS, ("comp. err", "coverage", "flicker", "exp. J")))
DEFAULT_LIMIT = 50


@dataclass
class Listing:
    """The first samples of a shard, metadata and member sizes only, and how many samples it holds."""

    samples: list[dict[str, Any]]
    total: int

    @property
    def hidden(self) -> int:
        return self.total - len(self.samples)


def list_samples(shard: str | Path, limit: int = DEFAULT_LIMIT) -> Listing:
    """Read the metadata of the first `limit` samples and count the rest; no video member is read."""
    samples: list[dict[str, Any]] = []
    total = 0
    # While a sample is read, `samples` holds those before it, so past the limit nothing is read.
    for sample in read_shard(shard, load=lambda key, extension: extension == "json" and len(samples) < limit):
        total += 1
        if len(samples) < limit:
            samples.append(sample)
    return Listing(samples, total)


def load_sample(shard: str | Path, key: str) -> dict[str, Any]:
    """The sample `key` with its members read; the samples before it are passed over unread."""
    for sample in read_shard(shard, load=lambda sample_key, extension: sample_key == key):
        if sample["__key__"] == key:
            return sample
    raise KeyError(f"no sample {key!r} in {shard}")


def describe(sample: dict[str, Any]) -> dict[str, Any]:
    """A listed sample's metadata plus the size of each member, for `--json`."""
    members = {name: size for name, size in sample.items() if isinstance(size, int)}
    return {"key": sample["__key__"], "members": members, **sample.get("json", {})}


def samples_table(samples: list[dict[str, Any]], title: str, width: int = 160) -> Table:
    """One row per sample: key and format, the three captions, the quality numbers.

    Cells stack their details on lines, so the table fits a narrow terminal; only the
    captions are cut short there, never the numbers. Cells are plain text: metadata is
    never read as markup or written to the terminal as control characters.
    """
    table = Table(title=Text(_text(title)), caption="captions: full / foreground / background; * derived by the pipeline; "
                                             "? missing or not what vidlayer writes")
    longest_key = max((len(s["__key__"]) for s in samples), default=3)
    caption_width = max(12, min(70, width - max(longest_key, 24) - 15 - 14))
    table.add_column("sample", no_wrap=True)
    table.add_column("captions", no_wrap=True)
    table.add_column("quality", no_wrap=True)
    for sample in samples:
        meta = sample.get("json", {})
        metrics = meta.get("metrics", {})
        quality = ("\n".join(f"{METRIC_LABELS[m]:<9} {_number(metrics[m], '.3f')}" for m in TABLE_METRICS
                             if m in metrics) if isinstance(metrics, dict) else "?")
        table.add_row(
            Text(f"{_text(sample['__key__'])}\n{_number(meta.get('frames'))} x {_number(meta.get('width'))}x"
                 f"{_number(meta.get('height'))} @ {_number(meta.get('fps'))} fps\n"
                 f"{_number(meta.get('num_foregrounds'))} foreground layer(s)"),
            Text("\n".join(_shorten(line, caption_width) for line in _caption_lines(meta))),
            Text(quality),
        )
    return table


def _caption_lines(meta: dict[str, Any]) -> list[str]:
    captions, derived = meta.get("captions", {}), meta.get("captions_derived", {})
    if not isinstance(captions, dict):
        return ["?"] * 3
    derived = derived if isinstance(derived, dict) else {}
    foreground = captions.get("foreground", [])
    foreground = " | ".join(map(_text, foreground)) if isinstance(foreground, list) else "?"
    return [_text(captions.get("full", "")), foreground + ("*" if derived.get("foreground") else ""),
            _text(captions.get("background") or "") + ("*" if derived.get("background") else "")]


def _text(value: Any) -> str:
    """A string as shown, control characters (a terminal's escapes) as "?"; anything else is "?"."""
    return "".join(c if c.isprintable() else "?" for c in value) if isinstance(value, str) else "?"


def _number(value: Any, spec: str = "g") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    try:
        return format(value, spec)
    except OverflowError:  # an integer too large for a float
        return "?"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_sample(sample: dict[str, Any], out: str | Path, columns: int = 8) -> Path:
    """Contact sheet: rows full, background, each foreground over a checkerboard and its alpha.

    Raises `SampleError` (a ValueError) when the metadata names no usable layers or they do not decode.
    """
    videos = decode_layers({role: sample[name] for role, name in layer_members(sample.get("json", {}), sample).items()})
    k = (len(videos) - 2) // 2
    rows = layer_rows(videos["full"], videos["background"], [videos[f"fg{i}"] for i in range(k)],
                      [videos[f"alpha{i}"] for i in range(k)])
    return save_png(contact_sheet(rows, columns=columns), out)
