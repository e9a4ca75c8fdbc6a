"""The clean background: every frame with its foreground removed and the hole filled.

What the foreground hides in one frame is usually seen in another, because the subject or
the camera moves. So each frame's hole (where any matte is non-zero, grown by a margin) is
filled with pixels that were background in other frames, brought over by the camera motion:

1. Camera: the flow's homographies are good to a tenth of a pixel per frame pair, but
   chaining them over a dozen frames adds up to a pixel, enough to smear texture. So each
   pair is refined once by ECC image registration (Evangelidis & Psarakis 2008) on the
   background both frames show, which brings chains down to a few hundredths of a pixel.
2. Propagation: a hole pixel is seen as background by other frames, brought over by the
   chained homography; it takes the consensus of the nearest `votes` of them (the view closest
   to their median). Near frames look most alike (lighting, blur, noise) and keep the fill
   steady over time; the vote rejects views where the matte missed part of the subject, which
   would otherwise be copied into every frame that borrows from them.
3. Spatial fill: what no frame ever saw is filled by OpenCV's Telea inpainting.
4. Seam: the fill fades into the original frame across the hole's margin, where the frame
   itself already shows background, so no edge is visible.

Far from the foreground the background is the input frame, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidlayer.clip import Clip
from vidlayer.morphology import disk, padded_box
from vidlayer.motion import chain_homographies, motion_of, normalise, warp_to
from vidlayer.stages.base import Resources, Stage, register


@dataclass
class PropagateInpaintParams:
    alpha_threshold: float = 0.01  # a pixel with more foreground than this (all layers) is part of the hole
    margin: float = 0.012  # the hole is grown by this share of the short side (matte errors, room for the seam)
    refine_iterations: int = 20  # ECC iterations refining each camera homography (0: use the flow's as they are)
    telea_radius: int = 5  # neighbourhood of Telea inpainting for never-seen pixels, pixels
    votes: int = 17  # views of each hole pixel (nearest frames first) whose consensus fills it; 1: the nearest


@register
class PropagateInpaint(Stage):
    stage = "inpaint"
    backend = "propagate"
    Params = PropagateInpaintParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: PropagateInpaintParams = self.params
        frames = clip.frames
        margin = max(1, round(p.margin * min(frames.shape[1:3])))
        cores, holes = clip_holes(clip.alphas, p.alpha_threshold, margin)
        homographies = motion_of(clip).homographies
        if p.refine_iterations > 0:
            homographies = refine_camera(frames, ~holes, homographies, p.refine_iterations)
        background = frames.copy()
        unseen_total = 0
        for t in range(len(frames)):
            if holes[t].any():
                filled, unseen = propagate(frames, holes, homographies, t, p.votes)
                filled = fill_unseen(filled, unseen, p.telea_radius)
                background[t] = blend_seam(frames[t], filled, cores[t], margin)
                unseen_total += int(unseen.sum())
        clip.background = background
        hole_total = int(holes.sum())
        clip.metrics.update(inpaint_hole_fraction=float(holes.mean()),
                            inpaint_seen_fraction=1 - unseen_total / hole_total if hole_total else 1.0)
        return clip


def clip_holes(alphas: np.ndarray, threshold: float, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """(cores, holes) [T, H, W] bool: where any matte is above `threshold`, and that grown by `margin`
    pixels, so that the blended seam lies outside the subject."""
    cores = alphas.sum(axis=0) > threshold
    return cores, np.stack([cv2.dilate(core.astype(np.uint8), disk(margin)) > 0 for core in cores])


def refine_camera(frames: np.ndarray, background: np.ndarray, homographies: np.ndarray,
                  iterations: int) -> np.ndarray:
    """Camera homographies t -> t+1 [T-1, 3, 3], refined by ECC on the background of each frame pair.

    ECC can wander off on flat or repetitive backgrounds, so a refinement is kept only when
    the shared background matches better with it than with the flow's estimate.
    """
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
    masks = background.astype(np.uint8)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-5)
    refined = homographies.copy()
    for t, homography in enumerate(homographies):
        # ECC's warp maps the template (frame t+1) into the input (frame t): the inverse homography.
        inverse = np.linalg.inv(homography)
        shared = masks[t] & warp_to(masks[t + 1], inverse, cv2.INTER_NEAREST)
        try:
            _, warp = cv2.findTransformECC(grey[t + 1], grey[t], inverse.astype(np.float32), cv2.MOTION_HOMOGRAPHY,
                                           criteria, shared, 3)
        except cv2.error:  # no convergence
            continue
        candidate = normalise(np.linalg.inv(warp.astype(np.float64)))
        if mismatch(grey[t], grey[t + 1], masks[t], masks[t + 1], candidate) < \
                mismatch(grey[t], grey[t + 1], masks[t], masks[t + 1], homography):
            refined[t] = candidate
    return refined


def mismatch(grey: np.ndarray, next_grey: np.ndarray, mask: np.ndarray, next_mask: np.ndarray,
             homography: np.ndarray) -> float:
    """Mean grey-level difference between the next frame and this one carried over by `homography`, on background."""
    shared = (next_mask & warp_to(mask, homography, cv2.INTER_NEAREST)) > 0
    if not shared.any():
        return np.inf
    return float(np.abs(warp_to(grey, homography) - next_grey)[shared].mean())


def propagate(frames: np.ndarray, holes: np.ndarray, homographies: np.ndarray, t: int,
              votes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Frame t with its hole filled from the other frames' background, and what stayed unfilled.

    Each hole pixel gathers up to `votes` views, nearest frames first, and takes the one
    closest to their median.
    """
    filled = frames[t].copy()
    # Only the box around the hole is resampled.
    y0, y1, x0, x1 = padded_box(holes[t], 0)
    hole = holes[t][y0:y1, x0:x1]
    size = (x1 - x0, y1 - y0)
    views = np.full((votes, *hole.shape, 3), np.nan, np.float32)
    count = np.zeros(hole.shape, np.int64)
    for s in sorted(range(len(frames)), key=lambda s: (abs(s - t), s)):
        wanted = hole & (count < votes)
        if s == t or not wanted.any():
            continue
        warp = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ chain_homographies(homographies, s, t)
        seen = cv2.warpPerspective((~holes[s]).astype(np.uint8), warp, size, flags=cv2.INTER_NEAREST) > 0
        take = wanted & seen
        if take.any():
            source = cv2.warpPerspective(frames[s], warp, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            views[count[take], *np.nonzero(take)] = source[take]
            count[take] += 1
    found = count > 0
    if found.any():
        candidates, views_per_pixel = views[:, found], count[found]  # [votes, N, 3], [N]
        pixel = np.arange(candidates.shape[1])
        ordered = np.sort(candidates, axis=0)  # missing views (nan) sort last; np.nanmedian is ~10x slower
        median = (ordered[(views_per_pixel - 1) // 2, pixel] + ordered[views_per_pixel // 2, pixel]) / 2
        distance = np.nan_to_num(np.abs(candidates - median).sum(axis=-1), nan=np.inf)
        filled[y0:y1, x0:x1][found] = candidates[distance.argmin(axis=0), pixel].astype(np.uint8)
    remaining = np.zeros_like(holes[t])
    remaining[y0:y1, x0:x1] = hole & ~found
    return filled, remaining


def fill_unseen(image: np.ndarray, unseen: np.ndarray, radius: int) -> np.ndarray:
    """Telea inpainting of the pixels no frame saw, on a crop around them."""
    if not unseen.any():
        return image
    y0, y1, x0, x1 = padded_box(unseen, 2 * radius)
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.inpaint(image[y0:y1, x0:x1], unseen[y0:y1, x0:x1].astype(np.uint8), radius,
                                    cv2.INPAINT_TELEA)
    return out


def blend_seam(frame: np.ndarray, filled: np.ndarray, core: np.ndarray, margin: int) -> np.ndarray:
    """The fill where the foreground is, fading to the original frame across the `margin` around it."""
    distance = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(1 - distance / (margin + 1), 0, 1)[..., None]
    return np.rint(weight * filled + (1 - weight) * frame).astype(np.uint8)
