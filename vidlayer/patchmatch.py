"""Exemplar fill of a large hole: every hole pixel is copied from a known part of the same image.

Diffusion-style inpainting (Telea, Navier-Stokes) carries the hole's edge inwards, which in a
large hole draws smeared streaks and blur blobs. Exemplar filling instead copies texture that
the image shows elsewhere, chosen so that neighbouring copies agree (Wexler, Shechtman & Irani
2007), with the nearest-patch search of PatchMatch (Barnes et al. 2009):

- coarse to fine over an image pyramid, so that the coarse levels settle the structure and
  the fine levels only refine texture;
- at each level, alternate a patch search (propagation from the neighbours' matches, then a
  shrinking random search) with a re-estimate of the hole from the matches' votes;
- the final image copies each hole pixel from its own match, with no averaging: sharp texture
  at the cost of the odd seam, which is what training data needs more than blur.

Everything is vectorised over the hole's pixels (propagation runs as parallel jumps rather
than a raster scan), and the finest levels only carry the coarser matches up: a 480p hole of 5 to
30% of the frame takes one to three seconds on one core, which is why the stage fills once per clip.
"""

from __future__ import annotations

import cv2
import numpy as np

PATCH_RADIUS = 2  # 5x5 patches
TAP_STEP = 2  # patches are compared on every other pixel of them (3x3 taps): a third of the work, as discriminative
COARSEST_SIDE = 24  # the pyramid stops when the image's short side would drop below this
SEARCH_MAX_PIXELS = 40_000  # levels with more hole pixels than this only carry the coarser matches up
EM_ITERATIONS = 3  # search + vote rounds per searched level
SEARCH_ITERATIONS = 2  # propagation + random search rounds per EM round
JUMPS = (1, 4)  # propagation distances, pixels
REFINE_RADIUS = 4  # random search radius above the coarsest level, which alone searches the whole image


def patchmatch_fill(image: np.ndarray, hole: np.ndarray, seed: int = 0) -> np.ndarray:
    """`image` [H, W, 3] uint8 with the `hole` [H, W] bool pixels copied from the rest of it.

    Falls back to Telea where the image has too little known area to copy from.
    """
    levels = pyramid(image.astype(np.float32), hole)
    rng = np.random.default_rng(seed)
    sources, previous_hole = None, None
    for level, (picture, level_hole) in enumerate(reversed(levels)):
        valid = valid_sources(level_hole)
        if not valid.any():
            return cv2.inpaint(image, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        targets = np.flatnonzero(level_hole)
        if sources is None:
            sources = rng.choice(np.flatnonzero(valid), len(targets))
            picture = telea(picture, level_hole)
        else:
            sources = upsample_matches(sources, previous_hole, level_hole, valid)
            picture = vote(picture, level_hole, targets, sources)
        if len(targets) <= SEARCH_MAX_PIXELS or level == 0:
            radius = max(level_hole.shape) if level == 0 else REFINE_RADIUS
            for _ in range(EM_ITERATIONS):
                sources = search(picture, level_hole, targets, sources, valid, radius, rng)
                picture = vote(picture, level_hole, targets, sources)
        previous_hole = level_hole
    out = image.copy()
    out[hole] = image.reshape(-1, 3)[sources]
    return out


def pyramid(image: np.ndarray, hole: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, hole) from full resolution down; a coarse pixel is hole when any of its fine ones is."""
    levels = [(image, hole)]
    while min(levels[-1][1].shape) // 2 >= COARSEST_SIDE:
        picture, level_hole = levels[-1]
        height, width = level_hole.shape[0] // 2, level_hole.shape[1] // 2
        coarse = cv2.resize(picture[:2 * height, :2 * width], (width, height), interpolation=cv2.INTER_AREA)
        coarse_hole = level_hole[:2 * height, :2 * width].reshape(height, 2, width, 2).any(axis=(1, 3))
        levels.append((coarse, coarse_hole))
    return levels


def valid_sources(hole: np.ndarray) -> np.ndarray:
    """Pixels whose whole patch is known and inside the image: what a hole patch may be copied from."""
    size = 2 * PATCH_RADIUS + 1
    return cv2.erode((~hole).astype(np.uint8), np.ones((size, size), np.uint8), borderValue=0) > 0


def telea(picture: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """A smooth first guess of the coarsest hole, so that the first search has colours to match."""
    filled = cv2.inpaint(np.clip(picture, 0, 255).astype(np.uint8), hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return filled.astype(np.float32)


def upsample_matches(sources: np.ndarray, coarse_hole: np.ndarray, hole: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each fine hole pixel's match: its coarse pixel's match, scaled up, with the same sub-position."""
    coarse_width = coarse_hole.shape[1]
    height, width = hole.shape
    match_map = np.full(coarse_hole.size, -1, np.int64)
    match_map[np.flatnonzero(coarse_hole)] = sources
    ys, xs = np.divmod(np.flatnonzero(hole), width)
    coarse_y, coarse_x = np.minimum(ys // 2, coarse_hole.shape[0] - 1), np.minimum(xs // 2, coarse_width - 1)
    coarse_match = match_map[coarse_y * coarse_width + coarse_x]
    match_y, match_x = np.divmod(np.maximum(coarse_match, 0), coarse_width)
    fine = (np.clip(2 * match_y + ys % 2, 0, height - 1) * width + np.clip(2 * match_x + xs % 2, 0, width - 1))
    return nearest_valid(fine, valid)


def nearest_valid(indices: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each flat index moved to the nearest valid source pixel (itself when valid)."""
    _, labels = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    valid_indices = np.flatnonzero(valid)
    label_of_valid = labels.ravel()[valid_indices]
    by_label = np.empty(label_of_valid.max() + 1, np.int64)
    by_label[label_of_valid] = valid_indices
    return by_label[labels.ravel()[indices]]


def patch_distance(padded: np.ndarray, width: int, targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Sum of squared colour differences between the patches around `targets` and around `sources`, on the taps.

    `padded` is the image padded by the patch radius and flattened [(H+2r)*(W+2r), 3]; indices are
    those of the unpadded image, `width` its width.
    """
    padded_width = width + 2 * PATCH_RADIUS
    target_base = padded_index(targets, width, padded_width)
    source_base = padded_index(sources, width, padded_width)
    distance = np.zeros(len(targets), np.float32)
    for dy in range(-PATCH_RADIUS, PATCH_RADIUS + 1, TAP_STEP):
        for dx in range(-PATCH_RADIUS, PATCH_RADIUS + 1, TAP_STEP):
            offset = dy * padded_width + dx
            difference = padded[target_base + offset] - padded[source_base + offset]
            distance += np.einsum("ij,ij->i", difference, difference)
    return distance


def padded_index(indices: np.ndarray, width: int, padded_width: int) -> np.ndarray:
    ys, xs = np.divmod(indices, width)
    return (ys + PATCH_RADIUS) * padded_width + xs + PATCH_RADIUS


def search(picture: np.ndarray, hole: np.ndarray, targets: np.ndarray, sources: np.ndarray, valid: np.ndarray,
           max_radius: int, rng: np.random.Generator) -> np.ndarray:
    """Better matches for the hole's patches: propagation from the neighbours' matches, then random search
    within `max_radius` of the current match, halving."""
    height, width = hole.shape
    padded = cv2.copyMakeBorder(picture, *[PATCH_RADIUS] * 4, cv2.BORDER_REFLECT).reshape(-1, 3)
    valid_flat = valid.ravel()
    match_map = np.full(hole.size, -1, np.int64)
    ys, xs = np.divmod(targets, width)
    best = patch_distance(padded, width, targets, sources)

    def consider(candidates: np.ndarray) -> None:
        nonlocal sources, best
        usable = (candidates >= 0) & (candidates < hole.size)
        usable[usable] = valid_flat[candidates[usable]]
        if not usable.any():
            return
        distance = patch_distance(padded, width, targets[usable], candidates[usable])
        better = distance < best[usable]
        chosen = np.flatnonzero(usable)[better]
        sources[chosen], best[chosen] = candidates[usable][better], distance[better]

    sources = sources.copy()
    for _ in range(SEARCH_ITERATIONS):
        for jump in JUMPS:
            for dy, dx in ((jump, 0), (-jump, 0), (0, jump), (0, -jump)):
                match_map[targets] = sources
                neighbour_y, neighbour_x = ys + dy, xs + dx
                inside = (neighbour_y >= 0) & (neighbour_y < height) & (neighbour_x >= 0) & (neighbour_x < width)
                neighbour_match = np.full(len(targets), -1, np.int64)
                neighbour_match[inside] = match_map[neighbour_y[inside] * width + neighbour_x[inside]]
                match_y, match_x = np.divmod(neighbour_match, width)
                shifted_x = match_x - dx
                candidates = np.where((neighbour_match >= 0) & (shifted_x >= 0) & (shifted_x < width),
                                      (match_y - dy) * width + shifted_x, -1)
                consider(candidates)
        radius = max_radius
        while radius >= 1:
            match_y, match_x = np.divmod(sources, width)
            random_y = match_y + rng.integers(-radius, radius + 1, len(targets))
            random_x = match_x + rng.integers(-radius, radius + 1, len(targets))
            inside = (random_y >= 0) & (random_y < height) & (random_x >= 0) & (random_x < width)
            consider(np.where(inside, random_y * width + random_x, -1))
            radius //= 2
    return sources


def vote(picture: np.ndarray, hole: np.ndarray, targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """The hole re-estimated as the mean, over the hole patches covering each pixel, of what their matches show."""
    height, width = hole.shape
    flat = picture.reshape(-1, 3)
    total = np.zeros((hole.size, 3), np.float32)
    weight = np.zeros(hole.size, np.float32)
    ys, xs = np.divmod(targets, width)
    source_y, source_x = np.divmod(sources, width)
    for dy in range(-PATCH_RADIUS, PATCH_RADIUS + 1):
        for dx in range(-PATCH_RADIUS, PATCH_RADIUS + 1):
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            covered = y[inside] * width + x[inside]
            # One offset never covers a pixel twice, so plain indexed adds are exact.
            weight[covered] += 1
            total[covered] += flat[(source_y[inside] + dy) * width + source_x[inside] + dx]
    out = flat.copy()
    out[targets] = total[targets] / weight[targets, None]
    return out.reshape(picture.shape)
