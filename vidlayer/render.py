"""Pictures of layered videos: contact sheets with one labelled row per layer.

Shared by `vidlayer inspect`, the evaluation report and the sampler, so every layered video
in the project looks the same on screen: foregrounds over a checkerboard, alphas in grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_WIDTH = 110


def checkerboard(height: int, width: int, cell: int = 12) -> np.ndarray:
    """[H, W, 3] uint8 light/dark grey checkerboard, the usual backdrop for transparency."""
    ys, xs = np.mgrid[:height, :width]
    light = ((ys // cell + xs // cell) % 2 == 0)
    return np.where(light[..., None], 200, 140).astype(np.uint8).repeat(3, axis=2)


def over_checkerboard(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite straight-colour frames [T, H, W, 3] with alpha [T, H, W] (0..1) over a checkerboard."""
    board = checkerboard(*foreground.shape[1:3]).astype(np.float32)
    a = alpha[..., None].astype(np.float32)
    return np.clip(a * foreground + (1 - a) * board, 0, 255).astype(np.uint8)


def grey_to_rgb(frames: np.ndarray) -> np.ndarray:
    """[T, H, W] grey (uint8, or float in 0..1) to [T, H, W, 3] uint8."""
    if frames.dtype != np.uint8:
        frames = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
    return np.repeat(frames[..., None], 3, axis=-1)


def pick_frames(num_frames: int, columns: int) -> np.ndarray:
    """Indices of `columns` frames spread evenly from first to last."""
    return np.unique(np.linspace(0, num_frames - 1, min(columns, num_frames)).round().astype(int))


def contact_sheet(rows: list[tuple[str, np.ndarray]], columns: int = 8, max_height: int = 144) -> Image.Image:
    """One row per (label, [T, H, W, 3] uint8 frames); columns are frames across time."""
    num_frames, height, width = rows[0][1].shape[:3]
    scale = min(1.0, max_height / height)
    cell_w, cell_h = max(1, round(width * scale)), max(1, round(height * scale))
    picks = pick_frames(num_frames, columns)
    gap = 4
    sheet = Image.new("RGB", (LABEL_WIDTH + len(picks) * (cell_w + gap), len(rows) * (cell_h + gap) + 18), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, t in enumerate(picks):
        draw.text((LABEL_WIDTH + c * (cell_w + gap), 2), f"frame {t}", fill="black", font=font)
    for r, (label, frames) in enumerate(rows):
        top = 18 + r * (cell_h + gap)
        draw.text((4, top + cell_h // 2 - 6), label, fill="black", font=font)
        for c, t in enumerate(picks):
            tile = Image.fromarray(frames[t]).resize((cell_w, cell_h), Image.Resampling.BILINEAR)
            sheet.paste(tile, (LABEL_WIDTH + c * (cell_w + gap), top))
    return sheet


def layer_rows(full: np.ndarray, background: np.ndarray, foregrounds: list[np.ndarray],
               alphas: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The standard rows: full, background, then each foreground over a checkerboard and its alpha."""
    rows = [("full", full), ("background", background)]
    for i, (fg, alpha) in enumerate(zip(foregrounds, alphas)):
        suffix = f" {i}" if len(foregrounds) > 1 else ""
        a = alpha.astype(np.float32) / 255 if alpha.dtype == np.uint8 else alpha
        rows += [(f"foreground{suffix}", over_checkerboard(fg, a)), (f"alpha{suffix}", grey_to_rgb(alpha))]
    return rows


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
