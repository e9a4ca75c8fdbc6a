"""Small mask helpers shared by the stages, the quality gate and the evaluation."""

from __future__ import annotations

import cv2
import numpy as np


def disk(radius: int) -> np.ndarray:
    """Round structuring element of the given radius."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def contour(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner contour (bool): mask pixels with a 4-neighbour outside the mask."""
    # cv2.erode pads with the maximum by default, so the frame's border never erodes the mask.
    return mask & ~(cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))) > 0)


def padded_box(mask: np.ndarray, pad: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mask's bounding box grown by `pad`, clipped to the frame."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    height, width = mask.shape
    return max(0, y - pad), min(height, y + h + pad), max(0, x - pad), min(width, x + w + pad)
