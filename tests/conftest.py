"""Shared fixtures: small videos on disk, written through the project's own encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.io.video import encode_video
from vidlayer.synth import synthesize


def moving_square_frames(num_frames: int = 24, width: int = 320, height: int = 240, scene: str = "coffee") -> np.ndarray:
    """A photo patch crossing a photo background: enough content for every filter to pass."""
    background = cv2.resize(getattr(skimage.data, scene)(), (width, height), interpolation=cv2.INTER_AREA)
    frames = np.repeat(background[None], num_frames, axis=0).copy()
    size = height // 4
    texture = cv2.resize(skimage.data.chelsea()[50:250, 100:300], (size, size), interpolation=cv2.INTER_AREA)
    for t in range(num_frames):
        x = int((width - size) * t / max(1, num_frames - 1))
        frames[t, height // 3: height // 3 + size, x: x + size] = texture
    return frames


@pytest.fixture
def square_frames() -> Callable[..., np.ndarray]:
    return moving_square_frames


@pytest.fixture
def write_video(tmp_path: Path) -> Callable[..., Path]:
    def write(name: str, frames: np.ndarray, fps: float = 16.0, folder: Path | None = None) -> Path:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_video(frames, fps))
        return path

    return write


# Small clips and windows keep each build to seconds.
SMALL_PIPELINE = ["window.num_frames=17", "window.short_side=240", "output.shard_max_samples=2", "write.preset=veryfast"]


@pytest.fixture(scope="session")
def small() -> list[str]:
    """Overrides of the default pipeline for test-sized builds."""
    return list(SMALL_PIPELINE)


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    """Three `vidlayer synth` clips with captions, 428x240, 1.5 s."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, 3, seed=11, width=428, height=240, seconds=1.5, progress=False)
    return out / "raw"


@pytest.fixture(scope="session")
def inline_build(raw, tmp_path_factory):
    """The default pipeline (small overrides) run in-process over `raw`: (output folder, summary)."""
    out = tmp_path_factory.mktemp("build") / "out"
    return out, build(raw, out, load_pipeline("default", SMALL_PIPELINE), executor="inline")
