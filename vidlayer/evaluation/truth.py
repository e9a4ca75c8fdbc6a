"""Ground truth, lined up frame by frame and pixel by pixel with a built sample.

Two layouts are read, each clip a folder named after its source video's stem:
- `vidlayer synth`: `gt/NAME/` with lossless full, background, fgK and alphaK videos and
  `layers.json`; everything can be scored.
- DAVIS: `gt/NAME/0000.png ...`, one 8-bit foreground annotation per source frame (> 127 is
  foreground); only segmentation can be scored.

A sample records the source frame of each of its frames (`source_frames`) and was resized
from the source without cropping, so the truth is picked at those frames and resized to the
sample's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vidlayer.io.video import decode_video


@dataclass
class Truth:
    """What is known about a sample's true layers; layer 0 on top."""

    name: str
    masks: np.ndarray  # [K, T, H, W] bool
    alphas: np.ndarray | None = None  # [K, T, H, W] float32 in [0, 1]
    foregrounds: np.ndarray | None = None  # [K, T, H, W, 3] uint8, straight colour
    background: np.ndarray | None = None  # [T, H, W, 3] uint8

    @property
    def has_layers(self) -> bool:
        return self.alphas is not None


def truth_folders(gt_dir: str | Path) -> dict[str, Path]:
    """Clip name -> ground-truth folder, for GT_DIR itself or a folder holding `gt/` (synth, DAVIS)."""
    root = Path(gt_dir)
    if (root / "gt").is_dir():
        root = root / "gt"
    if not root.is_dir():
        raise FileNotFoundError(f"no ground truth folder at {gt_dir}")
    found = {p.name: p for p in sorted(root.iterdir())
             if p.is_dir() and ((p / "layers.json").exists() or any(p.glob("*.png")))}
    if not found:
        raise FileNotFoundError(f"{root} holds no ground truth (synth `layers.json` or DAVIS per-frame PNG folders)")
    return found


def load_truth(folder: Path, source_frames: np.ndarray, size: tuple[int, int]) -> Truth:
    """The truth of `folder` at the given source frames, resized to `size` (width, height)."""
    if (folder / "layers.json").exists():
        return _synth_truth(folder, source_frames, size)
    return _davis_truth(folder, source_frames, size)


def _synth_truth(folder: Path, source_frames: np.ndarray, size: tuple[int, int]) -> Truth:
    count = json.loads((folder / "layers.json").read_text())["num_foregrounds"]

    def video(name: str, grey: bool = False) -> np.ndarray:
        frames = decode_video(folder / f"{name}.mp4", grey=grey, max_frames=int(source_frames.max()) + 1)
        if source_frames.max() >= len(frames):
            raise ValueError(f"{folder.name}: the sample uses source frame {source_frames.max()}, "
                             f"the truth has {len(frames)} frames")
        return _resized(frames[source_frames], size)

    alphas = np.stack([video(f"alpha{k}", grey=True) for k in range(count)]).astype(np.float32) / 255 if count \
        else np.zeros((0, len(source_frames), size[1], size[0]), np.float32)
    foregrounds = np.stack([video(f"fg{k}") for k in range(count)]) if count \
        else np.zeros((0, len(source_frames), size[1], size[0], 3), np.uint8)
    return Truth(folder.name, alphas > 0.5, alphas, foregrounds, video("background"))


def _davis_truth(folder: Path, source_frames: np.ndarray, size: tuple[int, int]) -> Truth:
    pngs = sorted(folder.glob("*.png"))
    if source_frames.max() >= len(pngs):
        raise ValueError(f"{folder.name}: the sample uses source frame {source_frames.max()}, "
                         f"the truth annotates {len(pngs)} frames")
    # Pillow, not cv2.imread: OpenCV's libpng fails ("bad parameters to zlib") once some other
    # library has loaded its own zlib into the process, as a build with Ray and PyAV does.
    annotations = np.stack([np.asarray(Image.open(pngs[i]).convert("L")) for i in source_frames])
    # Resize the 0/1 mask, not the grey levels: the annotations' soft edges come from resizing.
    masks = _resized((annotations > 127).astype(np.float32), size) > 0.5
    return Truth(folder.name, masks[None])


def _resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frames.shape[2] == size[0] and frames.shape[1] == size[1]:
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
