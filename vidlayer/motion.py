"""Dense motion of a clip: optical flow, the camera's homography and the warps built on them.

Flow comes from OpenCV's DIS at a small working resolution (fast, and plenty for motion
cues). The camera motion of each frame pair is the homography that best explains that flow,
fitted robustly so that moving subjects are outliers; what the homography does not explain
is the *residual* flow, the motion of things that move on their own.

Conventions: a flow `f` maps a pixel x of one frame to x + f(x) in the next; homographies map
full-resolution pixel coordinates; working and full-resolution pixel centres are related by
x_work = (x_full + 0.5) * scale - 0.5, the geometry of an area-averaging resize.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidlayer.clip import Clip, Motion

FIT_STEP = 6  # flow sampled every this many working pixels for the homography fit
FIT_THRESHOLD = 1.0  # RANSAC inlier distance, working pixels
MIN_INLIERS = 0.2  # a homography explaining less of the frame than this is not trusted
BORDER_STRIP = 0.15  # the strip along the frame's edges where the background is expected, share of the short side
PLANE_SHARE = 0.1  # a second background plane explains at least this share of the frame...
PLANE_BORDER = 0.2  # ...and of the border strip (a subject seldom fills much of the frame's edge)


def working_scale(height: int, width: int, short_side: int) -> float:
    """Factor that brings the short side down to `short_side`, never up."""
    return min(1.0, short_side / min(height, width))


def working_grey(frames: np.ndarray, scale: float) -> np.ndarray:
    """[T, h, w] uint8 grey frames at the working resolution (area-averaged, so no aliasing)."""
    height, width = frames.shape[1:3]
    size = (round(width * scale), round(height * scale))
    small = (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames)
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small])


def estimate_motion(frames: np.ndarray, work_short_side: int = 240,
                    preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> Motion:
    """Forward flow between consecutive frames [T, H, W, 3] and the camera homography of each pair."""
    scale = working_scale(*frames.shape[1:3], work_short_side)
    grey = working_grey(frames, scale)
    dis = cv2.DISOpticalFlow_create(preset)
    flow = np.stack([dis.calc(a, b, None) for a, b in zip(grey, grey[1:])]) if len(grey) > 1 \
        else np.zeros((0, *grey.shape[1:], 2), np.float32)
    homographies = np.stack([fit_camera(f, scale) for f in flow]) if len(flow) else np.zeros((0, 3, 3))
    return Motion(scale=scale, flow=flow, homographies=homographies)


def fit_camera(flow: np.ndarray, scale: float) -> np.ndarray:
    """Full-resolution homography of the background's motion in one flow field [h, w, 2].

    RANSAC on a grid of flow correspondences treats independently moving things as outliers.
    The largest consistent motion is not always the background's: when the camera follows a
    large subject, the subject holds still in the frame and can outvote a background that
    slides past it in depth layers. The background is what fills the frame's border, so a
    second fit on the border strip alone is tried, and whichever motion explains more of the
    border wins. When both fits are degenerate (too few inliers, a textureless frame) a
    similarity transform, and failing that the identity, is the safer guess.
    """
    h, w = flow.shape[:2]
    source, target, border = correspondences(flow)
    inside = (target[:, 0] >= 0) & (target[:, 0] <= w - 1) & (target[:, 1] >= 0) & (target[:, 1] <= h - 1)
    enough = max(8, int(MIN_INLIERS * len(source)))
    source, target, border = source[inside], target[inside], border[inside]
    candidates = [fit for points in (np.ones(len(source), bool), border) if points.sum() >= 8
                  for fit in [ransac_homography(source[points], target[points])] if fit is not None]
    if candidates:
        support = [_explained(H, source, target) for H in candidates]
        best = max(range(len(candidates)), key=lambda i: (support[i][border].sum(), support[i].sum()))
        if support[best].sum() >= enough:
            return to_full(candidates[best], scale)
    if len(source) >= enough:
        similarity, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                          ransacReprojThreshold=FIT_THRESHOLD)
        if similarity is not None and inliers.sum() >= enough:
            return to_full(np.vstack([similarity, [0.0, 0.0, 1.0]]), scale)
    return np.eye(3)


def correspondences(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a grid every FIT_STEP pixels [N, 2], where the flow [h, w, 2] takes them [N, 2], and
    which of them lie in the frame's border strip [N]."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[FIT_STEP // 2: h: FIT_STEP, FIT_STEP // 2: w: FIT_STEP].reshape(2, -1)
    source = np.stack([xs, ys], axis=1).astype(np.float32)
    margin = BORDER_STRIP * min(h, w)
    border = (np.minimum(xs, w - 1 - xs) < margin) | (np.minimum(ys, h - 1 - ys) < margin)
    return source, source + flow[ys, xs], border


def ransac_homography(source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    homography, _ = cv2.findHomography(source, target, cv2.RANSAC, FIT_THRESHOLD, maxIters=500)
    return homography


def _explained(homography: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which correspondences `homography` maps to within the RANSAC threshold."""
    moved = cv2.perspectiveTransform(source[:, None].astype(np.float64), homography)[:, 0]
    return np.linalg.norm(moved - target, axis=1) <= FIT_THRESHOLD


def resolution_change(scale: float) -> np.ndarray:
    """3x3 map from full-resolution to working pixel coordinates (pixel centres aligned)."""
    offset = (scale - 1) / 2
    return np.array([[scale, 0.0, offset], [0.0, scale, offset], [0.0, 0.0, 1.0]])


def to_full(homography: np.ndarray, scale: float) -> np.ndarray:
    """A working-resolution homography expressed in full-resolution pixels."""
    change = resolution_change(scale)
    return normalise(np.linalg.inv(change) @ homography @ change)


def to_working(homography: np.ndarray, scale: float) -> np.ndarray:
    """A full-resolution homography expressed in working-resolution pixels."""
    change = resolution_change(scale)
    return normalise(change @ homography @ np.linalg.inv(change))


def normalise(homography: np.ndarray) -> np.ndarray:
    return homography / homography[2, 2]


def homography_flow(homography: np.ndarray, height: int, width: int) -> np.ndarray:
    """[height, width, 2] flow that `homography` (in these pixels) induces: H(x) - x."""
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    points = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(points, homography.astype(np.float64)).reshape(height, width, 2)
    return moved - points.reshape(height, width, 2)


def camera_flow(motion: Motion) -> np.ndarray:
    """[T-1, h, w, 2] working-resolution flow the camera alone would have caused."""
    h, w = motion.flow.shape[1:3]
    flows = [homography_flow(to_working(H, motion.scale), h, w) for H in motion.homographies]
    return np.stack(flows) if flows else np.zeros_like(motion.flow)


def residual_flow(motion: Motion) -> np.ndarray:
    """[T-1, h, w, 2] flow minus the camera's: the motion of things moving on their own."""
    return motion.flow - camera_flow(motion)


def plane_residual(flow: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """[T-1, h, w, 2] residual flow against the camera and, where the scene has one, a second background plane.

    One homography describes a plane (or a camera that only turns). When the camera moves
    through a scene with depth, a near plane (the ground in front, a wall) slides past the far
    one at its own rate and would be taken for a subject. So the flow the camera leaves
    unexplained is fitted by a second homography; if that explains a sizable part of the frame
    and of its border strip, it is a background plane too, and each pixel keeps the smaller of
    its two residuals. A subject rarely fills much of the frame's edge, and one that moves with
    the near background is not moving on its own.
    """
    residual = flow - camera
    h, w = flow.shape[1:3]

    def sizable(points: np.ndarray, border: np.ndarray) -> bool:
        return points.sum() >= PLANE_SHARE * len(points) and (points & border).sum() >= PLANE_BORDER * border.sum()

    for t in range(len(flow)):
        source, target, border = correspondences(flow[t])
        grid = source.astype(int)
        left = np.linalg.norm(residual[t][grid[:, 1], grid[:, 0]], axis=1) > FIT_THRESHOLD
        if not sizable(left, border):
            continue
        plane = ransac_homography(source[left], target[left])
        if plane is None or not sizable(_explained(plane, source, target) & left, border):
            continue
        second = flow[t] - homography_flow(plane, h, w)
        closer = np.linalg.norm(second, axis=-1) < np.linalg.norm(residual[t], axis=-1)
        residual[t][closer] = second[closer]
    return residual


def chain_homographies(homographies: np.ndarray, source: int, target: int) -> np.ndarray:
    """Homography from frame `source` to frame `target` given the per-pair ones [T-1, 3, 3]."""
    chained = np.eye(3)
    for t in range(min(source, target), max(source, target)):
        chained = homographies[t] @ chained
    return normalise(chained if target >= source else np.linalg.inv(chained))


def warp_to(image: np.ndarray, homography: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resample `image` into the frame that `homography` maps it to (same size; outside is 0).

    E.g. `warp_to(frames[s], chain_homographies(motion.homographies, s, t))` is frame s as the
    camera of frame t would have seen it: the background lines up, moving subjects do not.
    """
    h, w = image.shape[:2]
    return cv2.warpPerspective(image, homography, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT)


def backward_warp(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Sample `image` at x + flow(x): with the flow t -> t+1, brings frame t+1 content onto frame t.

    Pixels whose source falls outside the image take the nearest border value.
    """
    h, w = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    return cv2.remap(image, grid + flow, None, interpolation, borderMode=cv2.BORDER_REPLICATE)


def invert_flow(flow: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Approximate inverse of a flow t -> t+1, i.e. the flow t+1 -> t, by fixed-point iteration.

    Solves g(y) = -f(y + g(y)); exact where the motion is smooth, approximate at occlusions.
    Cheaper than a second optical-flow pass when only a rough backward flow is needed.
    """
    inverse = -flow
    for _ in range(iterations):
        inverse = -backward_warp(flow, inverse)
    return inverse


def motion_of(clip: Clip) -> Motion:
    """The clip's motion, estimated here when no earlier stage did (so each stage also runs alone)."""
    if clip.motion is None:
        clip.motion = estimate_motion(clip.frames)
    return clip.motion
