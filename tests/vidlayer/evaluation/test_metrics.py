import math

import numpy as np
import pytest

from vidlayer.evaluation.metrics import (PSNR_CAP, alpha_errors, boundary_accuracy, composite_error, masked_psnr,
                                         masked_ssim, match_layers, region_similarity)
from vidlayer.layers import composite

T, H, W = 3, 64, 64


def square(y: int, x: int, size: int = 20) -> np.ndarray:
    """[T, H, W] bool mask of a size x size square at (y, x) in every frame."""
    mask = np.zeros((T, H, W), bool)
    mask[:, y:y + size, x:x + size] = True
    return mask


def textured(seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8 video of smooth colour blobs, so SSIM has structure to compare."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, (T, 8, 8, 3)).astype(np.uint8)
    return coarse.repeat(8, axis=1).repeat(8, axis=2)


def soft_matte() -> np.ndarray:
    """[T, H, W] matte in [0, 0.9]: a square with a linear ramp for an edge."""
    ramp = np.clip((np.arange(W) - 20) / 10, 0, 1) * np.clip((44 - np.arange(W)) / 10, 0, 1)
    return np.broadcast_to(0.9 * np.outer(ramp, ramp), (T, H, W)).astype(np.float32)


# Region similarity J

def test_j_is_one_for_a_perfect_prediction():
    assert np.array_equal(region_similarity(square(10, 10), square(10, 10)), np.ones(T))


def test_j_of_overlapping_squares_is_their_iou():
    # 20 x 20 squares shifted by 10 rows: 200 shared pixels out of 600.
    assert region_similarity(square(10, 10), square(20, 10)) == pytest.approx(np.full(T, 1 / 3))


def test_j_handles_empty_frames():
    empty = np.zeros((T, H, W), bool)
    assert np.array_equal(region_similarity(empty, empty), np.ones(T))
    assert np.array_equal(region_similarity(empty, square(10, 10)), np.zeros(T))
    assert np.array_equal(region_similarity(square(10, 10), empty), np.zeros(T))


# Boundary accuracy F

def test_f_is_one_for_a_perfect_prediction():
    assert np.array_equal(boundary_accuracy(square(10, 10), square(10, 10)), np.ones(T))


def test_f_tolerates_shifts_within_the_tolerance_only():
    tolerance = 2.5 / math.hypot(H, W)  # a radius of ceil(2.5) = 3 pixels
    within = boundary_accuracy(square(20, 23), square(20, 20), tolerance)
    beyond = boundary_accuracy(square(20, 25), square(20, 20), tolerance)
    assert np.array_equal(within, np.ones(T))
    assert np.all(beyond < 0.9)
    # The default tolerance is ceil(0.008 * 90.5) = 1 pixel at this size.
    assert np.array_equal(boundary_accuracy(square(20, 21), square(20, 20)), np.ones(T))
    assert np.all(boundary_accuracy(square(20, 23), square(20, 20)) < 0.9)


def test_f_is_zero_for_disjoint_contours():
    assert np.array_equal(boundary_accuracy(square(0, 0), square(40, 40)), np.zeros(T))


def test_f_handles_empty_masks():
    empty = np.zeros((T, H, W), bool)
    assert np.array_equal(boundary_accuracy(empty, empty), np.ones(T))
    assert np.array_equal(boundary_accuracy(empty, square(10, 10)), np.zeros(T))
    assert np.array_equal(boundary_accuracy(square(10, 10), empty), np.zeros(T))


def test_the_frame_border_is_not_a_contour():
    # The full frame has no contour; a frame less its last column has one only at that column's edge.
    full = np.ones((T, H, W), bool)
    almost = full.copy()
    almost[:, :, -1] = False
    assert np.array_equal(boundary_accuracy(full, full), np.ones(T))
    assert np.array_equal(boundary_accuracy(full, almost), np.zeros(T))


def test_f_scores_each_frame():
    pred = square(20, 20)
    pred[1] = False
    assert np.array_equal(boundary_accuracy(pred, square(20, 20)), [1.0, 0.0, 1.0])


# Alpha errors

def test_alpha_errors_vanish_for_a_perfect_matte():
    truth = soft_matte()
    assert alpha_errors(truth, truth) == {"mse": 0.0, "sad": 0.0, "gradient": 0.0, "dtssd": 0.0}


def test_a_constant_alpha_offset_costs_mse_and_sad_but_no_gradient_or_temporal_error():
    truth = soft_matte() * np.array([0.6, 0.8, 1.0], np.float32)[:, None, None]  # fading in: the truth changes too
    errors = alpha_errors(truth + 0.1, truth)
    assert errors["mse"] == pytest.approx(0.01, rel=1e-5)
    assert errors["sad"] == pytest.approx(0.1 * H * W / 1000, rel=1e-5)
    assert errors["gradient"] == pytest.approx(0.0, abs=1e-9)
    assert errors["dtssd"] == pytest.approx(0.0, abs=1e-7)


def test_the_gradient_error_sees_a_lost_soft_edge():
    truth = soft_matte()
    hard = (truth > 0.45).astype(np.float32)
    assert alpha_errors(hard, truth)["gradient"] > 1e-3


def test_dtssd_sees_flicker_against_a_static_truth():
    truth = soft_matte()
    flicker = truth.copy()
    flicker[1] += 0.1  # up, then back down: every pixel's change is off by 0.1 in both frame pairs
    assert alpha_errors(flicker, truth)["dtssd"] == pytest.approx(0.1, rel=1e-5)


def test_dtssd_is_zero_for_a_single_frame():
    truth = soft_matte()[:1]
    assert alpha_errors(truth + 0.1, truth)["dtssd"] == 0.0


# Masked PSNR and SSIM

def test_psnr_is_capped_for_a_perfect_match():
    video = textured()
    assert masked_psnr(video, video, square(10, 10)) == PSNR_CAP


def test_psnr_of_known_noise_in_the_region():
    truth = np.full((T, H, W, 3), 128, np.uint8)
    region = square(16, 16, size=32)
    noise = np.random.default_rng(0).normal(0, 5, (T, H, W, 3)).round()
    pred = np.where(region[..., None], truth + noise, truth).astype(np.uint8)
    expected = 10 * math.log10(255**2 / (25 + 1 / 12))  # rounding adds 1/12 to the variance
    assert masked_psnr(pred, truth, region) == pytest.approx(expected, abs=0.1)
    # Outside the noisy square the videos agree.
    assert masked_psnr(pred, truth, ~region) == PSNR_CAP


def test_masked_metrics_are_nan_for_an_empty_region():
    video = textured()
    empty = np.zeros((T, H, W), bool)
    assert math.isnan(masked_psnr(video, video, empty))
    assert math.isnan(masked_ssim(video, video, empty))


def test_ssim_is_one_for_a_perfect_match_and_drops_only_where_the_videos_differ():
    truth = textured()
    assert masked_ssim(truth, truth, square(10, 10)) == pytest.approx(1.0)
    damaged = square(16, 16, size=16)
    noise = np.random.default_rng(1).integers(-30, 31, (T, H, W, 3))
    pred = np.where(damaged[..., None], np.clip(truth + noise, 0, 255), truth).astype(np.uint8)
    assert masked_ssim(pred, truth, damaged) < 0.9
    # The 7 x 7 windows reach 3 pixels past the damage; a region beyond that sees none of it.
    far = ~square(12, 12, size=24)
    assert masked_ssim(pred, truth, far) == pytest.approx(1.0)


# Composite error

def opaque_layers(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two overlapping opaque squares over a random background: they composite exactly in uint8.

    Colours stop at 245 to leave room for an offset of 10.
    """
    rng = np.random.default_rng(seed)
    foregrounds = rng.integers(0, 246, (2, T, H, W, 3)).astype(np.uint8)
    alphas = np.stack([square(10, 10, size=30), square(25, 25, size=30)]).astype(np.float32)
    background = rng.integers(0, 246, (T, H, W, 3)).astype(np.uint8)
    return foregrounds, alphas, background


def test_composite_error_is_zero_for_layers_that_add_up():
    foregrounds, alphas, background = opaque_layers()
    full = composite(foregrounds, alphas, background).astype(np.uint8)
    assert composite_error(full, foregrounds, alphas, background) == 0.0


def test_composite_error_measures_a_known_offset_and_the_layer_order():
    foregrounds, alphas, background = opaque_layers()
    full = composite(foregrounds, alphas, background).astype(np.uint8)
    assert composite_error(full + 10, foregrounds, alphas, background) == pytest.approx(10 / 255)
    # Layer 1 drawn on top of layer 0 is wrong where they overlap.
    assert composite_error(full, foregrounds[::-1], alphas[::-1], background) > 0


# Layer matching

def test_match_layers_pairs_identical_layers():
    layers = np.stack([square(0, 0), square(40, 40)])
    assert match_layers(layers, layers) == [(0, 0), (1, 1)]


def test_match_layers_undoes_a_swapped_order():
    layers = np.stack([square(0, 0), square(40, 40), square(0, 40)])
    assert match_layers(layers[[2, 0, 1]], layers) == [(1, 0), (2, 1), (0, 2)]


def test_match_layers_prefers_the_larger_total_iou():
    # Prediction 0 overlaps both truths; giving it truth 1 lets prediction 1 take truth 0.
    truth = np.stack([square(0, 0), square(0, 10)])
    pred = np.stack([square(0, 8), square(0, 0)])
    assert match_layers(pred, truth) == [(1, 0), (0, 1)]


def test_match_layers_leaves_out_layers_without_overlap():
    truth = np.stack([square(0, 0), square(40, 40)])
    pred = np.stack([square(40, 40), square(0, 42), square(2, 2)])
    assert match_layers(pred, truth) == [(2, 0), (0, 1)]
    assert match_layers(np.stack([square(40, 40)]), np.stack([square(0, 0)])) == []


def test_match_layers_with_no_layers():
    some = np.stack([square(0, 0)])
    none = np.zeros((0, T, H, W), bool)
    assert match_layers(none, some) == []
    assert match_layers(some, none) == []
    assert match_layers(none, none) == []
