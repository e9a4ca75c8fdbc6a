"""The scores `vidlayer eval` gives predicted layers against ground truth.

- region similarity J and boundary accuracy F (DAVIS 2016, Perazzi et al., "A Benchmark Dataset
  and Evaluation Methodology for Video Object Segmentation"): per-frame IoU of the masks, and
  the F-measure of their contours matched within a small tolerance.
- alpha errors (the alpha matting benchmark, Rhemann et al. 2009, "A Perceptually Motivated
  Online Benchmark for Image Matting"): MSE, SAD and the gradient error of the mattes.
- dtSSD (Erofeev et al. 2015, "Multi-Frame Video Matting Benchmark"): how much the matte's
  change from frame to frame differs from the truth's; it catches flicker that per-frame
  errors miss.
- masked PSNR and SSIM of colour layers (background, foregrounds) over the pixels that count,
  e.g. the inpainted hole rather than the copied rest of the frame.
- composite error: how well the predicted layers add back up to the video.
- layer matching: which predicted layer answers which true one, before any of the above.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

from vidlayer.layers import recomposite_error
from vidlayer.morphology import contour, disk

PSNR_CAP = 100.0  # dB for a perfect match: finite, so results stay JSON-safe
GRADIENT_SIGMA = 1.4  # Rhemann et al.


def region_similarity(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """DAVIS J: per-frame IoU of [T, H, W] bool masks; a frame where both are empty scores 1."""
    inter = np.count_nonzero(pred & truth, axis=(1, 2))
    union = np.count_nonzero(pred | truth, axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def boundary_accuracy(pred: np.ndarray, truth: np.ndarray, tolerance: float = 0.008) -> np.ndarray:
    """DAVIS F: per-frame F-measure of the precision and recall of [T, H, W] bool masks' contours.

    A contour pixel counts as matched if the other contour lies within ceil(tolerance * image
    diagonal) pixels, as in the DAVIS evaluation code. Both contours empty scores 1, one empty 0.
    """
    near = disk(math.ceil(tolerance * math.hypot(*pred.shape[1:])))
    counts = np.empty((len(pred), 4), np.int64)  # pred contour, its matches, truth contour, its matches
    for t, (p, g) in enumerate(zip(pred, truth)):
        p_edge, g_edge = contour(p).astype(np.uint8), contour(g).astype(np.uint8)
        counts[t] = (np.count_nonzero(p_edge), np.count_nonzero(p_edge & cv2.dilate(g_edge, near)),
                     np.count_nonzero(g_edge), np.count_nonzero(g_edge & cv2.dilate(p_edge, near)))
    n_pred, hit_pred, n_truth, hit_truth = counts.T
    precision = hit_pred / np.maximum(n_pred, 1)
    recall = hit_truth / np.maximum(n_truth, 1)
    f = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(pred)), where=precision + recall > 0)
    # With one contour empty, precision and recall are 0 (nothing matched); both empty is a perfect answer.
    return np.where((n_pred == 0) & (n_truth == 0), 1.0, f)


def alpha_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MSE, SAD, gradient error (Rhemann et al.) and dtSSD (Erofeev et al.) of [T, H, W] mattes in [0, 1].

    SAD and gradient error are per-frame sums in thousands, the matting benchmarks' unit,
    averaged over frames; dtSSD is 0 for a single frame.
    """
    pred, truth = pred.astype(np.float32, copy=False), truth.astype(np.float32, copy=False)
    error = pred - truth
    # Gaussian derivative filters within each frame; sigma 0 leaves the time axis alone.
    sigma = (0, GRADIENT_SIGMA, GRADIENT_SIGMA)
    gradient = [np.hypot(gaussian_filter(a, sigma, order=(0, 1, 0)), gaussian_filter(a, sigma, order=(0, 0, 1)))
                for a in (pred, truth)]
    # (p_t - p_{t-1}) - (g_t - g_{t-1}) is the change of the error from one frame to the next.
    change = np.diff(error, axis=0)
    dtssd = np.sqrt(np.mean(np.square(change), axis=(1, 2), dtype=np.float64)).mean() if len(change) else 0.0
    return {
        "mse": float(np.mean(np.square(error), dtype=np.float64)),
        "sad": float(np.abs(error).sum(axis=(1, 2), dtype=np.float64).mean() / 1000),
        "gradient": float(np.square(gradient[0] - gradient[1]).sum(axis=(1, 2), dtype=np.float64).mean() / 1000),
        "dtssd": float(dtssd),
    }


def masked_psnr(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB, peak 255) of [T, H, W, 3] uint8 videos over the [T, H, W] `region`, all frames pooled.

    Scoring only the region keeps the untouched rest of the frame from inflating the score;
    nan for an empty region, PSNR_CAP for a perfect match.
    """
    if not region.any():
        return math.nan
    mse = np.mean(np.square(pred[region].astype(np.float32) - truth[region]), dtype=np.float64)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255**2 / mse))


def masked_ssim(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Mean SSIM of the luma of [T, H, W, 3] uint8 videos over the [T, H, W] `region`, all frames pooled.

    The SSIM map is computed on whole frames (7x7 windows see past the region's edge) and
    averaged over the region only; nan for an empty region.
    """
    total = 0.0
    for p, g, inside in zip(pred, truth, region):
        if inside.any():
            _, ssim = structural_similarity(_luma(p), _luma(g), data_range=255, full=True)
            total += float(ssim[inside].sum(dtype=np.float64))
    count = np.count_nonzero(region)
    return total / count if count else math.nan


def _luma(frame: np.ndarray) -> np.ndarray:
    """float32 grey of an RGB frame, unrounded so quantisation does not count as error."""
    return cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2GRAY)


def composite_error(full: np.ndarray, foregrounds: np.ndarray, alphas: np.ndarray, background: np.ndarray) -> float:
    """Mean |full - composite| (0..1) of [K, T, H, W, 3] colours and [K, T, H, W] mattes over [T, H, W, 3] background;
    layer 0 on top (the quality gate's own measure, over the whole clip)."""
    return float(recomposite_error(full, foregrounds, alphas, background).mean(dtype=np.float64))


def match_layers(pred: np.ndarray, truth: np.ndarray) -> list[tuple[int, int]]:
    """(pred_index, truth_index) pairs of [Kp, T, H, W] and [Kt, T, H, W] bool masks, by truth index.

    Layer order is arbitrary, so pairs maximise the total clip-level IoU (Hungarian assignment);
    pairs that do not overlap at all are left out.
    """
    inter = np.array([[np.count_nonzero(p & g) for g in truth] for p in pred], np.float64).reshape(len(pred), len(truth))
    union = np.count_nonzero(pred, axis=(1, 2, 3))[:, None] + np.count_nonzero(truth, axis=(1, 2, 3)) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return sorted(((int(i), int(j)) for i, j in zip(rows, cols) if iou[i, j] > 0), key=lambda pair: pair[1])
