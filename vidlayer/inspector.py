"""`vidlayer inspect`: what is inside a shard, as a table and as a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from vidlayer.io.shards import read_shard
from vidlayer.io.video import decode_video
from vidlayer.render import contact_sheet, layer_rows, save_png

TABLE_METRICS = ("quality_composite_error", "quality_alpha_coverage", "quality_alpha_flicker", "quality_confidence")
METRIC_LABELS = dict(zip(TABLE_METRICS, ("comp. err", "coverage", "flicker", "exp. J")))


def load_samples(shard: str | Path) -> list[dict[str, Any]]:
    return list(read_shard(shard))


def describe(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's metadata plus the size of each member, for `--json`."""
    members = {name: len(value) for name, value in sample.items() if isinstance(value, bytes)}
    return {"key": sample["__key__"], "members": members, **sample.get("json", {})}


def samples_table(samples: list[dict[str, Any]], title: str, width: int = 160) -> Table:
    """One row per sample: key and format, the three captions, the quality numbers.

    Cells stack their details on lines, so the table fits a narrow terminal; only the
    captions are cut short there, never the numbers.
    """
    table = Table(title=title, caption="captions: full / foreground / background; * derived by the pipeline")
    longest_key = max((len(s["__key__"]) for s in samples), default=3)
    caption_width = max(12, min(70, width - max(longest_key, 24) - 15 - 14))
    table.add_column("sample", no_wrap=True)
    table.add_column("captions", no_wrap=True)
    table.add_column("quality", no_wrap=True)
    for sample in samples:
        meta = sample.get("json", {})
        captions = meta.get("captions", {})
        derived = meta.get("captions_derived", {})
        lines = [captions.get("full", ""),
                 " | ".join(captions.get("foreground", [])) + ("*" if derived.get("foreground") else ""),
                 (captions.get("background") or "") + ("*" if derived.get("background") else "")]
        metrics = meta.get("metrics", {})
        table.add_row(
            f"{sample['__key__']}\n{meta.get('frames', '?')} x {meta.get('width', '?')}x{meta.get('height', '?')}"
            f" @ {meta.get('fps', 0):g} fps\n{meta.get('num_foregrounds', '?')} foreground layer(s)",
            "\n".join(_shorten(line, caption_width) for line in lines),
            "\n".join(f"{METRIC_LABELS[m]:<9} {metrics[m]:.3f}" for m in TABLE_METRICS if m in metrics),
        )
    return table


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_sample(sample: dict[str, Any], out: str | Path, columns: int = 8) -> Path:
    """Contact sheet: rows full, background, each foreground over a checkerboard and its alpha."""
    layers = sample["json"]["layers"]
    full = decode_video(sample[layers["full"]])
    background = decode_video(sample[layers["background"]])
    foregrounds = [decode_video(sample[name]) for name in layers["foreground"]]
    alphas = [decode_video(sample[name], grey=True) for name in layers["alpha"]]
    return save_png(contact_sheet(layer_rows(full, background, foregrounds, alphas), columns=columns), out)


def find_sample(samples: list[dict[str, Any]], key: str | None) -> dict[str, Any]:
    if key is None:
        if not samples:
            raise KeyError("the shard holds no samples")
        return samples[0]
    for sample in samples:
        if sample["__key__"] == key:
            return sample
    raise KeyError(f"no sample {key!r} in this shard (it has: {', '.join(s['__key__'] for s in samples[:5])}...)")

