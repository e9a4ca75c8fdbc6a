"""Signals of a layered clip's quality that need no ground truth, for the quality gate.

Each says something about whether the layers are right, not only self-consistent:
- composite error, coverage and flicker: the layers add up, hold a real subject, stay steady.
- motion: a subject moves on its own where its matte is (`quality_motion_inside`, in units of
  the frame's noise) and little else does (`quality_motion_outside`); independent motion the
  mattes leave out (`quality_motion_uncovered`) is a subject, or part of one, that was missed.
- edges: a matte that follows a subject has its outline on the frame's colour edges
  (`quality_edge_alignment`); one cut out of terrain or spilt over it mostly does not.
- colour: a subject usually differs in colour from its surroundings (`quality_colour_contrast`).
- ghost: where the matte says "subject", the background must differ from the video; where it
  equals it (`quality_ghost`) the background still shows the subject, or the matte holds
  background.
- shape over time: a subject's area changes smoothly (`quality_area_variation`) and it rarely
  fills the frame's border (`quality_border`), where camera motion uncovers new pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidlayer.clip import Clip
from vidlayer.layers import recomposite_error, total_coverage
from vidlayer.morphology import contour, disk
from vidlayer.motion import backward_warp, camera_flow, motion_of

NOISE_FLOOR = 0.25  # residual flow, working pixels, always counted as noise (as the segmenter does)
MOVING = 3.0  # residual motion, in noise units, above which a pixel moves on its own
GHOST_LEVEL = 12  # grey levels: a background this close to the video shows what the video shows
SAMPLED_FRAMES = 8  # frames the image signals look at, evenly spread
EDGE_PERCENTILE = 80  # a pixel is on an edge when its gradient is in the frame's top 20%...
EDGE_FLOOR = 20.0  # ...and at least this strong (Sobel units): a flat frame has no edges
COLOUR_BINS = 8  # per channel, for the colour histograms
RING = 0.04  # width of the surroundings a subject is compared with, share of the short side
BORDER = 0.02  # width of the border strip, share of the short side


def measure(clip: Clip) -> dict[str, float]:
    """Every signal of a clip that has its layers (alphas, foregrounds, background); names are metric keys."""
    full, alphas = clip.frames, clip.alphas
    coverage = total_coverage(alphas)
    whole, fg = composite_errors(full, clip.foregrounds, alphas, clip.background)
    motion = motion_of(clip)
    frames = np.unique(np.linspace(0, len(full) - 1, SAMPLED_FRAMES).round().astype(int))
    masks = coverage > 0.5
    return {
        "quality_composite_error": whole,
        "quality_composite_error_fg": fg,
        "quality_alpha_coverage": float(alphas.sum(axis=0).mean()),
        "quality_alpha_flicker": alpha_flicker(alphas.sum(axis=0), motion.flow),
        **motion_signals(coverage, motion.flow, camera_flow(motion)),
        "quality_edge_alignment": edge_alignment(full[frames], masks[frames]),
        "quality_colour_contrast": colour_contrast(full[frames], masks[frames]),
        "quality_ghost": ghost(full, clip.background, coverage),
        "quality_area_variation": area_variation(coverage),
        "quality_border": border_share(coverage),
    }


def composite_errors(full: np.ndarray, foregrounds: np.ndarray, alphas: np.ndarray,
                     background: np.ndarray) -> tuple[float, float]:
    """Mean absolute recomposite error (0..1) over the frame and over the pixels a foreground touches."""
    error = recomposite_error(full, foregrounds, alphas, background)
    region = alphas.max(axis=0) > 1e-3
    return float(error.mean()), float(error[region].mean()) if region.any() else 0.0


def alpha_flicker(alpha: np.ndarray, flow: np.ndarray) -> float:
    """Mean |a_t - a_{t+1} warped back to t| relative to the mean matte, at the flow's resolution."""
    h, w = flow.shape[1:3]
    small = np.stack([cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) for a in alpha])
    changes, sizes = [], []
    for t in range(len(flow)):
        predicted = backward_warp(small[t + 1], flow[t])
        changes.append(np.abs(small[t] - predicted).mean())
        sizes.append(small[t].mean())
    return float(np.mean(changes) / max(np.mean(sizes), 1e-6))


def motion_signals(coverage: np.ndarray, flow: np.ndarray, camera: np.ndarray) -> dict[str, float]:
    """Independent motion inside the mattes, outside them, and the share of it they leave out.

    Motion is the residual flow (what the camera does not explain) in units of each frame's
    median residual plus a floor, so parallax and flow jitter count as noise.
    """
    if not len(flow):
        return {"quality_motion_inside": 0.0, "quality_motion_outside": 0.0, "quality_motion_uncovered": 0.0}
    h, w = flow.shape[1:3]
    residual = np.linalg.norm(flow - camera, axis=-1)
    residual /= np.median(residual, axis=(1, 2), keepdims=True) + NOISE_FLOOR
    near = disk(max(1, round(RING * min(h, w))))
    inside, outside, moving, missed = [], [], 0, 0
    for t, r in enumerate(residual):
        small = cv2.resize(coverage[t], (w, h), interpolation=cv2.INTER_AREA) > 0.5
        around = cv2.dilate(small.astype(np.uint8), near) > 0
        if small.any():
            inside.append(np.median(r[small]))
        if not around.all():
            outside.append(r[~around].mean())
        strong = r > MOVING
        moving += int(strong.sum())
        missed += int((strong & ~around).sum())
    return {"quality_motion_inside": float(np.mean(inside)) if inside else 0.0,
            "quality_motion_outside": float(np.mean(outside)) if outside else 0.0,
            "quality_motion_uncovered": missed / moving if moving else 0.0}


def edge_alignment(frames: np.ndarray, masks: np.ndarray) -> float:
    """Share of the mattes' outline (away from the frame's edge) lying on strong colour edges."""
    on_edge, total = 0, 0
    for frame, mask in zip(frames, masks):
        edge = contour(mask)
        edge[:2], edge[-2:], edge[:, :2], edge[:, -2:] = False, False, False, False
        if not edge.any():
            continue
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        strong = cv2.dilate(gradient, disk(1)) >= max(np.percentile(gradient, EDGE_PERCENTILE), EDGE_FLOOR)
        on_edge += int((strong & edge).sum())
        total += int(edge.sum())
    return on_edge / total if total else 0.0


def colour_contrast(frames: np.ndarray, masks: np.ndarray) -> float:
    """1 - the intersection of the colour histograms of the subject and of a ring around it."""
    ring = disk(max(1, round(RING * min(frames.shape[1:3]))))
    subject, around = np.zeros(COLOUR_BINS ** 3), np.zeros(COLOUR_BINS ** 3)
    for frame, mask in zip(frames, masks):
        if not mask.any():
            continue
        bins = (frame // (256 // COLOUR_BINS)).astype(np.int64)
        index = (bins[..., 0] * COLOUR_BINS + bins[..., 1]) * COLOUR_BINS + bins[..., 2]
        surrounding = (cv2.dilate(mask.astype(np.uint8), ring) > 0) & ~mask
        subject += np.bincount(index[mask], minlength=COLOUR_BINS ** 3)
        around += np.bincount(index[surrounding], minlength=COLOUR_BINS ** 3)
    if not subject.any() or not around.any():
        return 0.0
    return float(1 - np.minimum(subject / subject.sum(), around / around.sum()).sum())


def ghost(full: np.ndarray, background: np.ndarray, coverage: np.ndarray) -> float:
    """Share of the mattes' opaque inside where the background shows what the video shows."""
    inside = coverage > 0.9
    if not inside.any():
        return 0.0
    same = np.stack([np.abs(f.astype(np.int16) - b).max(axis=-1) < GHOST_LEVEL for f, b in zip(full, background)])
    return float(same[inside].mean())


def area_variation(coverage: np.ndarray) -> float:
    """Mean frame-to-frame change of the mattes' area, relative to their mean area."""
    areas = coverage.sum(axis=(1, 2))
    if len(areas) < 2 or not areas.any():
        return 0.0
    return float(np.abs(np.diff(areas)).mean() / areas.mean())


def border_share(coverage: np.ndarray) -> float:
    """Share of the mattes' mass within the frame's border strip."""
    h, w = coverage.shape[1:]
    strip = max(1, round(BORDER * min(h, w)))
    border = np.ones((h, w), bool)
    border[strip:-strip, strip:-strip] = False
    total = coverage.sum()
    return float(coverage[:, border].sum() / total) if total else 0.0
