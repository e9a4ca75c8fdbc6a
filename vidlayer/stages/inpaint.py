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
3. Spatial fill: what no frame ever saw (a subject that hardly moves against the camera) is
   filled once per clip, on the frame that misses the most of it, and carried to every other
   frame by the camera motion: one fill is cheaper and steadier over time than one per frame.
   Large never-seen parts are filled by copying texture from the rest of the frame (PatchMatch
   exemplar fill, `vidlayer.patchmatch`): Telea's diffusion draws streaks and blur blobs there;
   thin ones, and what the carried fill does not cover, by Telea, which is exact on slivers.
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
from vidlayer.patchmatch import patchmatch_fill
from vidlayer.stages.base import Resources, Stage, register

XPHOTO_FILLS = {"shiftmap": cv2.xphoto.INPAINT_SHIFTMAP, "fsr_fast": cv2.xphoto.INPAINT_FSR_FAST,
                "fsr_best": cv2.xphoto.INPAINT_FSR_BEST}
DIFFUSION_FILLS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}
UNSEEN_FILLS = ("patchmatch", *XPHOTO_FILLS, *DIFFUSION_FILLS)
SHADING_SIGMA = 8.0  # exemplar fills keep detail finer than this (pixels) and take coarser colour from Telea


@dataclass
class PropagateInpaintParams:
    alpha_threshold: float = 0.01  # a pixel with more foreground than this (all layers) is part of the hole
    margin: float = 0.012  # the hole is grown by this share of the short side (matte errors, room for the seam)
    refine_iterations: int = 20  # ECC iterations refining each camera homography (0: use the flow's as they are)
    telea_radius: int = 5  # neighbourhood of Telea (and Navier-Stokes) inpainting for never-seen pixels, pixels
    votes: int = 17  # views of each hole pixel (nearest frames first) whose consensus fills it; 1: the nearest
    unseen_fill: str = "patchmatch"  # never-seen pixels: patchmatch, shiftmap, fsr_fast, fsr_best, telea, navier_stokes
    exemplar_min_width: int = 8  # never-seen parts narrower than this (pixels) are left to Telea by exemplar fills

    def __post_init__(self) -> None:
        if self.unseen_fill not in UNSEEN_FILLS:
            raise ValueError(f"inpaint.propagate unseen_fill must be one of {', '.join(UNSEEN_FILLS)}, "
                             f"got {self.unseen_fill!r}")
        if self.votes < 1 or self.telea_radius < 1 or self.exemplar_min_width < 1:
            raise ValueError(f"inpaint.propagate needs votes, telea_radius and exemplar_min_width >= 1, got "
                             f"{self.votes}, {self.telea_radius} and {self.exemplar_min_width}")


@register
class PropagateInpaint(Stage):
    stage = "inpaint"
    backend = "propagate"
    Params = PropagateInpaintParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: PropagateInpaintParams = self.params
        frames = clip.frames
        cores, holes, margin = clip_holes(clip.alphas, p.alpha_threshold, p.margin)
        homographies = motion_of(clip).homographies
        if p.refine_iterations > 0:
            homographies = refine_camera(frames, ~holes, homographies, p.refine_iterations)
        filled = frames.copy()
        unseen = np.zeros_like(holes)
        for t in np.flatnonzero(holes.any(axis=(1, 2))):
            filled[t], unseen[t] = propagate(frames, holes, homographies, t, p.votes)
        if unseen.any():
            fill_unseen_once(filled, unseen, homographies, p)
        clip.background = frames.copy()
        for t in np.flatnonzero(holes.any(axis=(1, 2))):
            clip.background[t] = blend_seam(frames[t], filled[t], cores[t], margin)
        clip.metrics.update(unseen_metrics(holes, unseen))
        return clip


def unseen_metrics(holes: np.ndarray, unseen: np.ndarray) -> dict[str, float]:
    """How much of the hole no frame saw, so that clips whose background is mostly made up can be told apart:
    over the clip (share of hole pixels), at worst in one frame (share of its hole), and as a share of the frame."""
    hole_total = int(holes.sum())
    unseen_total = int(unseen.sum())
    per_frame_hole = holes.sum(axis=(1, 2))
    per_frame_share = unseen.sum(axis=(1, 2)) / np.maximum(per_frame_hole, 1)
    return {"inpaint_hole_fraction": float(holes.mean()),
            "inpaint_seen_fraction": 1 - unseen_total / hole_total if hole_total else 1.0,
            "inpaint_unseen_fraction": unseen_total / hole_total if hole_total else 0.0,
            "inpaint_unseen_max": float(per_frame_share.max(initial=0.0)),
            "inpaint_unseen_area": float(unseen.mean())}


def fill_unseen_once(filled: np.ndarray, unseen: np.ndarray, homographies: np.ndarray,
                     p: PropagateInpaintParams) -> None:
    """Fill the never-seen pixels of every frame, in place, from one fill of the frame that misses the most.

    The never-seen part of the scene is the same in every frame (what all holes share), so one fill
    carried by the camera motion covers it everywhere, identically; Telea mends what the key frame
    does not show (the scene outside its view).
    """
    key = int(unseen.sum(axis=(1, 2)).argmax())
    filled[key] = fill_unseen(filled[key], unseen[key], p.unseen_fill, p.telea_radius, p.exemplar_min_width)
    for t in np.flatnonzero(unseen.any(axis=(1, 2))):
        if t == key:
            continue
        warp = chain_homographies(homographies, key, t)
        carried = warp_to(filled[key], warp, cv2.INTER_CUBIC)
        covered = warp_to(np.ones(unseen.shape[1:], np.uint8), warp, cv2.INTER_NEAREST) > 0
        take = unseen[t] & covered
        filled[t][take] = carried[take]
        filled[t] = diffuse(filled[t], unseen[t] & ~covered, cv2.INPAINT_TELEA, p.telea_radius)


def clip_holes(alphas: np.ndarray, threshold: float, margin: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(cores, holes, margin in pixels): cores [T, H, W] bool where any matte is above `threshold`, holes
    those grown by `margin` (a share of the short side), so that the blended seam lies outside the subject."""
    margin_pixels = max(1, round(margin * min(alphas.shape[2:4])))
    cores = alphas.sum(axis=0) > threshold
    holes = np.stack([cv2.dilate(core.astype(np.uint8), disk(margin_pixels)) > 0 for core in cores])
    return cores, holes, margin_pixels


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


def fill_unseen(image: np.ndarray, unseen: np.ndarray, method: str, telea_radius: int,
                exemplar_min_width: int) -> np.ndarray:
    """`image` with the `unseen` pixels filled by `method` (one of UNSEEN_FILLS), each on a crop around them.

    Exemplar methods fill the parts at least `exemplar_min_width` wide, with context around them to
    copy from; Telea fills the rest (slivers, where diffusion is exact and cheap). Telea runs first
    over all of it, so that no unseen pixel (the subject itself) is ever copied or blurred into the fill.
    """
    if method in DIFFUSION_FILLS:
        return diffuse(image, unseen, DIFFUSION_FILLS[method], telea_radius)
    out = diffuse(image, unseen, cv2.INPAINT_TELEA, telea_radius)
    wide = cv2.morphologyEx(unseen.astype(np.uint8), cv2.MORPH_OPEN, disk(exemplar_min_width // 2)) > 0
    if wide.any():
        y0, y1, x0, x1 = padded_box(wide, 0)
        y0, y1, x0, x1 = padded_box(wide, max(y1 - y0, x1 - x0) // 2)
        shading, crop_hole = out[y0:y1, x0:x1], wide[y0:y1, x0:x1]
        copied = patchmatch_fill(shading, crop_hole) if method == "patchmatch" \
            else xphoto_fill(shading, crop_hole, XPHOTO_FILLS[method])
        shading[crop_hole] = with_shading(copied, shading)[crop_hole]
    return out


def with_shading(texture: np.ndarray, shading: np.ndarray) -> np.ndarray:
    """The fine detail of `texture` over the coarse colour of `shading`: copied patches bring texture but
    the wrong brightness wherever the scene has a gradient, which diffusion from the hole's edge gets right."""
    def low_pass(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), SHADING_SIGMA)

    return np.clip(np.rint(texture - low_pass(texture) + low_pass(shading)), 0, 255).astype(np.uint8)


def diffuse(image: np.ndarray, hole: np.ndarray, flag: int, radius: int) -> np.ndarray:
    """OpenCV's diffusion inpainting (Telea or Navier-Stokes) of `hole`, on a crop around it."""
    if not hole.any():
        return image
    y0, y1, x0, x1 = padded_box(hole, 2 * radius)
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.inpaint(image[y0:y1, x0:x1], hole[y0:y1, x0:x1].astype(np.uint8), radius, flag)
    return out


def xphoto_fill(image: np.ndarray, hole: np.ndarray, flag: int) -> np.ndarray:
    """OpenCV contrib's exemplar (shift-map) or frequency-selective inpainting; its mask marks the known pixels."""
    source = image.copy()
    source[hole] = 0
    out = np.zeros_like(image)
    cv2.xphoto.inpaint(source, (~hole).astype(np.uint8), out, flag)
    return out


def blend_seam(frame: np.ndarray, filled: np.ndarray, core: np.ndarray, margin: int) -> np.ndarray:
    """The fill where the foreground is, fading to the original frame across the `margin` around it."""
    distance = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(1 - distance / (margin + 1), 0, 1)[..., None]
    return np.rint(weight * filled + (1 - weight) * frame).astype(np.uint8)
