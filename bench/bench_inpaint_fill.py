"""Never-seen background fill: exemplar fills (own PatchMatch, OpenCV contrib's shift-map and FSR) against
diffusion (Telea, Navier-Stokes), side by side on real frames, and the propagate stage's speed and flicker.

Holes shaped like real subjects (DAVIS ground-truth masks, scaled to 5, 15 and 30% of the frame) are cut into
real 480p frames: the composite benchmark's true backgrounds, and DAVIS frames where their own subject is not.
Each method fills them through the stage's own `fill_unseen`; the table gives, inside the hole against the
truth, PSNR, SSIM and texture (mean gradient magnitude of the fill over the truth's: 1 is as detailed as the
truth, below it is blur or streaks, which PSNR rewards), and milliseconds per fill. A contact sheet (truth |
hole | each method) goes to bench/out/inpaint_fill/. Then the whole propagate stage runs on a real background
clip under a subject fixed on screen (never seen: the worst case) for frames per second on one core, and on a
still, noisy clip for flicker (mean change of the fill between frames).

    python bench/bench_inpaint_fill.py [--images 2] [--methods patchmatch shiftmap fsr_fast telea navier_stokes]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table
from skimage.metrics import structural_similarity

from vidlayer.clip import Captions, Clip
from vidlayer.io.video import decode_video
from vidlayer.stages.inpaint import PropagateInpaint, PropagateInpaintParams, fill_unseen

DATA = Path("/work/shared/bench")
OUT = Path(__file__).resolve().parent / "out" / "inpaint_fill"
HOLE_SHARES = (0.05, 0.15, 0.30)
SHAPES = ("breakdance", "dog", "lucia", "rhino")


def subject_mask(name: str) -> np.ndarray:
    """A DAVIS ground-truth subject mask, cropped to its bounding box."""
    mask = cv2.imread(str(DATA / "davis" / "gt" / name / "0000.png"), cv2.IMREAD_GRAYSCALE) > 0
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return mask[y:y + h, x:x + w]


def place_hole(shape: np.ndarray, share: float, avoid: np.ndarray) -> np.ndarray:
    """`shape` scaled to cover `share` of the frame, placed where it overlaps `avoid` (the frame's own subject)
    least."""
    height, width = avoid.shape
    scale = min(np.sqrt(share * height * width / shape.sum()), 0.95 * height / shape.shape[0],
                0.95 * width / shape.shape[1])
    size = (max(1, round(shape.shape[1] * scale)), max(1, round(shape.shape[0] * scale)))
    scaled = cv2.resize(shape.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    best, best_overlap = None, np.inf
    for y in np.linspace(0, height - size[1], 5).astype(int):
        for x in np.linspace(0, width - size[0], 7).astype(int):
            overlap = (avoid[y:y + size[1], x:x + size[0]] & scaled).sum() + abs(x + size[0] / 2 - width / 2) * 1e-3
            if overlap < best_overlap:
                best, best_overlap = (y, x), overlap
    hole = np.zeros_like(avoid)
    hole[best[0]:best[0] + size[1], best[1]:best[1] + size[0]] = scaled
    return hole


def test_images(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, 480p frame, its own subject mask) for `count` composite backgrounds and `count` DAVIS frames."""
    images = []
    for folder in sorted((DATA / "composite" / "gt").iterdir())[:count]:
        frame = to_480p(decode_video(folder / "background.mp4", max_frames=1)[0])
        images.append((f"bg:{folder.name}", frame, np.zeros(frame.shape[:2], bool)))
    for name in SHAPES[:count]:
        frame = to_480p(decode_video(DATA / "davis" / "raw" / f"{name}.mp4", max_frames=1)[0])
        own = cv2.imread(str(DATA / "davis" / "gt" / name / "0000.png"), cv2.IMREAD_GRAYSCALE) > 0
        own = cv2.resize(own.astype(np.uint8), frame.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        images.append((f"davis:{name}", frame, cv2.dilate(own.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0))
    return images


def to_480p(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height == 480:
        return frame
    return cv2.resize(frame, (round(width * 480 / height), 480), interpolation=cv2.INTER_AREA)


def texture(image: np.ndarray, hole: np.ndarray) -> float:
    """Mean gradient magnitude (grey) inside the hole."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))[hole].mean())


def scores(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[float, float, float]:
    """(PSNR, SSIM, texture ratio) inside the hole."""
    error = ((filled[hole].astype(np.float64) - truth[hole]) ** 2).mean()
    _, similarity = structural_similarity(truth, filled, channel_axis=2, full=True)
    return (10 * np.log10(255 ** 2 / max(error, 1e-10)), float(similarity.mean(axis=-1)[hole].mean()),
            texture(filled, hole) / max(texture(truth, hole), 1e-6))


def compare_fills(images: list, methods: list[str], console: Console) -> None:
    params = PropagateInpaintParams()
    results: dict[tuple[str, float], list[tuple[float, float, float, float]]] = {}
    sheet_rows = []
    for image_index, (name, frame, own) in enumerate(images):
        for share_index, share in enumerate(HOLE_SHARES):
            shape = SHAPES[(image_index + share_index + 1) % len(SHAPES)]
            hole = place_hole(subject_mask(shape), share, own)
            holed = frame.copy()
            holed[hole] = [255, 0, 255]
            row = [frame, holed]
            for method in methods:
                start = time.perf_counter()
                filled = fill_unseen(holed, hole, method, params.telea_radius, params.exemplar_min_width)
                elapsed = time.perf_counter() - start
                results.setdefault((method, share), []).append((*scores(filled, frame, hole), elapsed * 1000))
                row.append(filled)
            console.print(f"{name} {share:.0%}: " + ", ".join(
                f"{m} {results[(m, share)][-1][0]:.1f} dB {results[(m, share)][-1][3]:.0f} ms" for m in methods))
            sheet_rows.append(np.hstack([cv2.resize(image, (360, 240), interpolation=cv2.INTER_AREA) for image in row]))
    table = Table(title="never-seen fill inside the hole (mean over images)")
    for column in ("method", "hole", "PSNR dB", "SSIM", "texture", "ms/frame"):
        table.add_column(column, justify="right")
    for method in methods:
        for share in HOLE_SHARES:
            psnr, ssim, ratio, ms = np.mean(results[(method, share)], axis=0)
            table.add_row(method, f"{share:.0%}", f"{psnr:.2f}", f"{ssim:.3f}", f"{ratio:.2f}", f"{ms:.0f}")
    console.print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    sheet = OUT / "contact_sheet.png"
    cv2.imwrite(str(sheet), cv2.cvtColor(np.vstack(sheet_rows), cv2.COLOR_RGB2BGR))
    console.print(f"columns: truth | hole | {' | '.join(methods)} -> {sheet}")


def run_stage(frames: np.ndarray, alphas: np.ndarray, method: str) -> tuple[Clip, float]:
    clip = Clip(key="k", input_key="k", path="", source="", captions=Captions("c"), frames=frames, alphas=alphas)
    stage = PropagateInpaint(PropagateInpaintParams(unseen_fill=method))
    stage.setup()
    start = time.perf_counter()
    stage.process(clip)
    return clip, time.perf_counter() - start


def stage_speed_and_flicker(methods: list[str], console: Console) -> None:
    background = decode_video(DATA / "composite" / "gt" / "dog-over-rhino" / "background.mp4")
    hole = place_hole(subject_mask("breakdance"), 0.15, np.zeros(background.shape[1:3], bool))
    alphas = np.repeat(hole[None, None].astype(np.float32), len(background), axis=1)
    moving = np.where(hole[None, ..., None], np.uint8([255, 0, 255]), background)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2, background.shape)
    still = np.where(hole[None, ..., None], np.uint8([255, 0, 255]),
                     np.clip(background[:1] + noise, 0, 255).astype(np.uint8))
    table = Table(title=f"propagate stage, {len(background)} frames {background.shape[2]}x{background.shape[1]}, "
                        f"subject fixed on screen ({hole.mean():.0%} of the frame), one core")
    for column in ("unseen_fill", "frames/s (camera moving)", "unseen share of hole", "flicker (still, grey levels)"):
        table.add_column(column, justify="right")
    for method in methods:
        clip, elapsed = run_stage(moving, alphas, method)
        still_clip, _ = run_stage(still, alphas, method)
        flicker = np.abs(np.diff(still_clip.background[:, hole].astype(np.float32), axis=0)).mean()
        table.add_row(method, f"{len(moving) / elapsed:.2f}", f"{clip.metrics['inpaint_unseen_fraction']:.2f}",
                      f"{flicker:.3f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="composite backgrounds and DAVIS frames, each")
    parser.add_argument("--methods", nargs="+",
                        default=["patchmatch", "shiftmap", "fsr_fast", "telea", "navier_stokes"])
    parser.add_argument("--stage-methods", nargs="+", default=["patchmatch", "telea"])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    console = Console()
    compare_fills(test_images(args.images), args.methods, console)
    stage_speed_and_flicker(args.stage_methods, console)


if __name__ == "__main__":
    main()
