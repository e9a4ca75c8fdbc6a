"""Soft, temporally stable alpha mattes from the segmenter's binary masks.

A binary mask is right about the inside and the far outside of a subject but wrong along
its outline, where hair, motion blur and anti-aliasing mix subject and background. So per
layer and frame:

1. Trimap: pixels well inside the mask are known foreground, pixels well outside known
   background, and a band around the outline is unknown. The band widens with the subject's
   size (bigger outlines are rougher) and with its own motion (motion blur smears the edge).
2. Matting: the colour guided filter (He et al. 2013, in its fast form of He & Sun 2015)
   turns the mask into alpha = a . colour + b, fitted in small windows. That local linear
   model is the colour-line assumption behind closed-form matting (Levin et al. 2008):
   across an edge between two colours, coverage is an affine function of colour, so the
   filter snaps the matte to the real edge and recovers much of its ramp. Windows are kept
   small (half the band) because wide ones let texture leak into the matte. Only the
   unknown band takes the result; the known regions stay exactly 1 and 0.
3. Temporal stabilisation: a mask that jitters by a pixel from frame to frame makes the band
   shimmer. Each frame's band is averaged with its neighbours' mattes carried over by the
   optical flow, each weighted by how well the flow explains the colour there (so the average
   never mixes in a matte the flow put in the wrong place).

Layer 0 is on top: a layer's matte is what remains of it after the layers above, so the
mattes of a pixel never add up to more than 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidlayer.clip import Clip, Motion
from vidlayer.layers import visible_coverage
from vidlayer.morphology import disk, padded_box
from vidlayer.motion import backward_warp, invert_flow, motion_of, residual_flow
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class GuidedMatteParams:
    min_band: float = 0.006  # half width of the unknown band, share of the short side, at the least
    size_band: float = 0.03  # plus this share of the subject's equivalent radius
    blur_band: float = 0.5  # plus this share of the subject's motion per frame (motion blur)
    max_band: float = 0.04  # and at most this share of the short side
    radius: float = 0.5  # guided filter window radius, in units of the band's half width
    eps: float = 1e-4  # guided filter regularisation (colour variance, 0..1 intensities); larger is smoother
    subsample: int = 1  # fit the filter's coefficients at 1/subsample resolution (2 suits 1080p and up)
    temporal: float = 0.5  # weight of each neighbouring frame's matte in the band (0: no stabilisation)
    temporal_sigma: float = 10.0  # colour mismatch (luma-weighted grey levels) at which a neighbour counts 1/e


@register
class GuidedMatte(Stage):
    stage = "matte"
    backend = "guided"
    Params = GuidedMatteParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: GuidedMatteParams = self.params
        frames, masks = clip.frames, clip.masks
        motion = motion_of(clip)
        short_side = min(frames.shape[1:3])
        speeds = layer_speeds(masks, motion)
        alphas = np.zeros(masks.shape, np.float32)
        bands = np.zeros(masks.shape, bool)
        for k, t in np.ndindex(masks.shape[:2]):
            subject_radius = np.sqrt(masks[k, t].sum() / np.pi)
            half_width = min(p.min_band * short_side + p.size_band * subject_radius + p.blur_band * speeds[k, t],
                             p.max_band * short_side)
            alphas[k, t], bands[k, t] = self._matte(frames[t], masks[k, t], max(1, round(half_width)))
        if p.temporal > 0:
            alphas = stabilise(alphas, bands, frames, motion, p.temporal, p.temporal_sigma)
        clip.alphas = visible_coverage(alphas)
        in_band = clip.alphas[bands]
        soft = float(((in_band > 0.02) & (in_band < 0.98)).mean()) if in_band.size else 0.0
        clip.metrics.update(matte_unknown_fraction=float(bands.any(axis=0).mean()), matte_soft_fraction=soft)
        return clip

    def _matte(self, frame: np.ndarray, mask: np.ndarray, half_width: int) -> tuple[np.ndarray, np.ndarray]:
        """Alpha [H, W] of one layer in one frame and its unknown band [H, W] bool; filtered on a crop of the band."""
        p: GuidedMatteParams = self.params
        alpha = np.zeros(mask.shape, np.float32)
        band = np.zeros(mask.shape, bool)
        if not mask.any():
            return alpha, band
        radius = max(1, round(p.radius * half_width))
        y0, y1, x0, x1 = padded_box(mask, half_width + radius + 1)
        crop = mask[y0:y1, x0:x1].astype(np.uint8)
        inside = cv2.erode(crop, disk(half_width)) > 0
        unknown = (cv2.dilate(crop, disk(half_width)) > 0) & ~inside
        guide = frame[y0:y1, x0:x1].astype(np.float32) / 255
        soft = guided_filter(guide, crop.astype(np.float32), radius, p.eps, p.subsample)
        alpha[y0:y1, x0:x1] = np.where(unknown, np.clip(soft, 0, 1), inside)
        band[y0:y1, x0:x1] = unknown
        return alpha, band


def layer_speeds(masks: np.ndarray, motion: Motion) -> np.ndarray:
    """[K, T] median motion of each layer relative to the camera, full-resolution pixels per frame."""
    residual = np.linalg.norm(residual_flow(motion), axis=-1) / motion.scale
    residual = np.concatenate([residual, residual[-1:]])  # the last frame moves as the one before
    h, w = residual.shape[1:]
    speeds = np.zeros(masks.shape[:2])
    for k, t in np.ndindex(masks.shape[:2]):
        small = cv2.resize(masks[k, t].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        if small.any():
            speeds[k, t] = np.median(residual[t][small])
    return speeds


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """Fast colour guided filter (He & Sun 2015): `source` [H, W] filtered by `guide` [H, W, 3] in 0..1.

    In every (2 radius + 1)^2 window the output is a linear function of the guide's colour,
    q = a . I + b, fitted to the source by ridge regression; each pixel averages the fits of
    the windows covering it. The coefficients are smooth, so they are fitted at 1/subsample
    resolution and upsampled, which loses almost nothing and saves subsample^2 of the work.
    """
    height, width = source.shape
    size = (max(1, round(width / subsample)), max(1, round(height / subsample)))
    small_guide = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
    small_source = cv2.resize(source, size, interpolation=cv2.INTER_AREA)[..., None]
    window = (2 * max(1, round(radius / subsample)) + 1,) * 2
    box = lambda image: cv2.boxFilter(image, -1, window, borderType=cv2.BORDER_REFLECT)
    # All window means in one pass: I (3), p (1), I p (3) and the 6 distinct products I_i I_j.
    i, j = np.triu_indices(3)
    products = small_guide[..., i] * small_guide[..., j]
    means = box(np.concatenate([small_guide, small_source, small_guide * small_source, products], axis=-1))
    mean_guide, mean_source, mean_product = means[..., :3], means[..., 3:4], means[..., 4:7]
    covariance = np.empty((*means.shape[:2], 3, 3), np.float32)
    covariance[..., i, j] = means[..., 7:] - mean_guide[..., i] * mean_guide[..., j]
    covariance[..., j, i] = covariance[..., i, j]
    covariance += eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(covariance, (mean_product - mean_guide * mean_source)[..., None])[..., 0]
    b = mean_source - (a * mean_guide).sum(axis=-1, keepdims=True)
    coefficients = cv2.resize(box(np.concatenate([a, b], axis=-1)), (width, height), interpolation=cv2.INTER_LINEAR)
    return (coefficients[..., :3] * guide).sum(axis=-1) + coefficients[..., 3]


def stabilise(alphas: np.ndarray, bands: np.ndarray, frames: np.ndarray, motion: Motion,
              weight: float, sigma: float) -> np.ndarray:
    """Average each frame's band with the neighbouring mattes carried along the flow, in place.

    A neighbour counts in proportion to exp(-(colour mismatch / sigma)^2): where the flow
    carries the neighbour's colours exactly onto this frame it also carries its matte right.
    Only a crop around the frame's bands is resampled.
    """
    num_frames = len(frames)
    crops = []
    for t in range(num_frames):
        if not bands[:, t].any():
            continue
        box = y0, y1, x0, x1 = padded_box(bands[:, t].any(axis=0), 1)
        here = frames[t, y0:y1, x0:x1].astype(np.float32)
        own = alphas[:, t, y0:y1, x0:x1]
        total, weights = own.copy(), np.ones(here.shape[:2], np.float32)
        for n in (t - 1, t + 1):
            if not 0 <= n < num_frames:
                continue
            flow = crop_flow(motion.flow[t] if n > t else invert_flow(motion.flow[n]), motion.scale,
                             frames.shape[1:3], box)
            difference = np.abs(backward_warp(frames[n], flow).astype(np.float32) - here)
            mismatch = cv2.cvtColor(difference, cv2.COLOR_RGB2GRAY)
            agreement = weight * np.exp(-(mismatch / sigma) ** 2)
            total += agreement * np.stack([backward_warp(alpha, flow) for alpha in alphas[:, n]])
            weights += agreement
        crops.append((t, box, np.where(bands[:, t, y0:y1, x0:x1], total / weights, own)))
    # Written back only once every frame has read its neighbours' unstabilised mattes.
    for t, (y0, y1, x0, x1), crop in crops:
        alphas[:, t, y0:y1, x0:x1] = crop
    return alphas


def crop_flow(flow: np.ndarray, scale: float, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A working-resolution flow brought to full resolution and cut to `box` (y0, y1, x0, x1).

    The crop's origin is added in, so `backward_warp(full_frame, crop)` samples the right pixels.
    """
    height, width = size
    y0, y1, x0, x1 = box
    full = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1] / scale
    return full + np.array([x0, y0], np.float32)

