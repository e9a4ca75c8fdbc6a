"""Weights-free segmentation of the main moving subject(s), robust to camera motion.

1. Motion: dense flow and a camera homography per frame pair (`vidlayer.motion`), estimated
   once and handed on to later stages. The camera is the motion that explains the frame's
   border best (a camera tracking a large subject holds the subject still), and a second
   background plane along the border (near ground sliding past far hills) counts as camera too.
2. Evidence: the residual flow (what the camera does not explain) summed along the trajectory
   through each pixel, into the future and out of the past. A subject moves in both directions
   of time while occlusion trails show in only one, so the smaller sum is kept, in units of the
   frame's robust noise level so that one threshold suits footage with and without parallax.
3. Regions and tracks: the moving pixels of each frame split into connected regions. A region
   counts only if its own motion explains its change in brightness better than the camera
   does; flow drifting over textureless or repetitive surfaces explains nothing. Regions the
   flow carries onto each other are linked into tracks, the candidate subjects.
4. Selection: tracks that stay side by side and move together are one subject cut by an
   occluder and are joined; the most salient credible tracks (persistent, large, central, off
   the border) become layers, small regions nearby join them, a vote along the flow over
   neighbouring frames steadies them and brief pauses are bridged by carrying the mask along.
5. Refinement: per frame and layer, GrabCut on a crop around the motion mask, starting from the
   part whose pixels confirm the motion and free to move the boundary only within a band,
   snaps the mask to the subject's colour edges.

Metrics: `segment_confidence` (see `confidence`: share of the independent motion the layers
account for, times their frame-to-frame stability), `segment_coverage` (mean share of the
frame the layers cover) and `segment_instances` (number of layers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vidlayer.clip import Clip, Drop, Motion
from vidlayer.morphology import disk, padded_box
from vidlayer.motion import backward_warp, camera_flow, estimate_motion, invert_flow, plane_residual, working_grey
from vidlayer.stages.base import Resources, Stage, register

BRIGHTNESS_NOISE = 1.0  # grey levels of frame-to-frame change that no motion needs to explain (noise, compression)
MAX_PAUSE_CANDIDATES = 12  # the most salient tracks considered for joining across a pause


@dataclass
class MotionSegmentParams:
    work_short_side: int = 240  # flow, evidence and tracks are computed with the short side at this many pixels
    max_instances: int = 2  # at most this many foreground layers
    memory: float = 0.8  # share of a pixel's residual motion carried on to the next frame along its trajectory
    noise_floor: float = 0.25  # residual motion, working pixels, always counted as noise (flow jitter, compression)
    motion_threshold: float = 3.0  # evidence, in noise units, above which a pixel moves on its own
    min_support: float = 0.3  # a moving region's own motion must explain this share of the change the camera leaves
    min_area_fraction: float = 0.002  # a subject covers at least this share of the frame, on average while seen
    min_persistence: float = 0.3  # ... is seen moving in at least this share of the frames
    secondary_salience: float = 0.2  # a further layer needs at least this share of the main subject's salience
    link_overlap: float = 0.3  # share of the smaller region that two regions must overlap, following the flow, to link
    merge_distance: float = 0.07  # smaller moving regions this close (share of the short side) join a layer
    join_reach: float = 0.2  # two tracks this close (share of the short side) that move together are one subject
    join_coherence: float = 0.3  # ... "together": mean residual motions differ by at most this share of the faster
    max_pause: float = 1.0  # seconds a subject may stand still (or hide) at the clip's start or end and keep its mask
    refine: bool = True  # snap the masks to colour edges with GrabCut
    explained_change: float = 2.0  # grey levels of a pixel's change its own motion must explain to vouch for a layer
    core_closing: float = 0.04  # gaps this wide (share of the short side) between such pixels are closed, holes filled
    refine_band: float = 0.065  # how far refinement may move the boundary, share of the short side
    refine_iterations: int = 2  # GrabCut iterations per frame and layer
    refine_pixels: int = 60000  # larger crops are shrunk to this many pixels first (GrabCut's cost grows with the crop)


@register
class MotionSegmenter(Stage):
    stage = "segment"
    backend = "motion"
    Params = MotionSegmentParams
    default_resources = Resources(cpus=1)

    def process(self, clip: Clip) -> Clip:
        p: MotionSegmentParams = self.params
        frames = clip.frames
        if len(frames) < 3:
            raise Drop("no_foreground", f"{len(frames)} frames are too few to tell subject motion from camera motion")
        motion = estimate_motion(frames, p.work_short_side)
        coarse, moving, explained = self.coarse_masks(frames, motion, clip.fps)
        if p.refine:
            cores = trusted_cores(coarse, explained, round(p.core_closing * min(coarse.shape[2:])))
            masks = refine_masks(frames, coarse, cores, p)
        else:
            masks = upsample(coarse, frames.shape[1:3])
        masks = masks[masks.any(axis=(1, 2, 3))]
        if not len(masks):
            raise Drop("no_foreground", "the moving regions found vanished when their masks were cleaned up")
        clip.masks, clip.motion = masks, motion
        clip.metrics.update(segment_confidence=confidence(moving, coarse, motion.flow),
                            segment_coverage=float(masks.any(axis=0).mean()),
                            segment_instances=float(len(masks)))
        return clip

    def coarse_masks(self, frames: np.ndarray, motion: Motion, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[K, T, h, w] working-resolution masks of the chosen subjects; [T, h, w] every independently moving
        pixel, and every pixel whose own motion explains its change in brightness."""
        p: MotionSegmentParams = self.params
        camera = camera_flow(motion)
        residual = plane_residual(motion.flow, camera)
        backward = np.stack([invert_flow(f) for f in motion.flow])
        evidence = independent_motion(residual, motion.flow, backward, p.memory, p.noise_floor)
        moving = evidence > p.motion_threshold
        camera_error, flow_error = brightness_errors(working_grey(frames, motion.scale), motion.flow, backward, camera)
        labels = label_regions(moving, camera_error, flow_error, p.min_support)
        if not labels.any():
            raise Drop("no_foreground", f"nothing moves independently of the camera: no region moves more than "
                       f"{p.motion_threshold} times the noise on its own while explaining its change in brightness "
                       f"(the strongest independent motion is {evidence.max():.1f} times the noise)")
        tracks = link_regions(labels, motion.flow, p.link_overlap)
        # Before credibility is judged: each part of a subject that paused may be too brief alone.
        stats = track_stats(tracks)
        sizable = [int(i) + 1 for i in np.argsort(-stats["salience"]) if stats["area"][i] >= p.min_area_fraction]
        tracks = join_pauses(tracks, backward, sizable[:MAX_PAUSE_CANDIDATES], p.link_overlap)
        short_side = min(moving.shape[1:])
        tracks = join_tracks(tracks, residual, self._credible(track_stats(tracks)), p.merge_distance * short_side,
                             p.join_reach * short_side, p.join_coherence, p.noise_floor)
        coarse = np.stack([tracks == i for i in self._choose(track_stats(tracks))])
        coarse = merge_fragments(coarse, labels, p.merge_distance * short_side)
        max_gap = max(1, round(p.max_pause * fps))
        coarse = np.stack([fill_gaps(temporal_vote(m, motion.flow, backward), motion.flow, backward, max_gap)
                           for m in coarse])
        explained = carry_peak(camera_error - flow_error, motion.flow, backward, p.memory) > p.explained_change
        return coarse, moving, explained

    def _credible(self, stats: dict[str, np.ndarray]) -> list[int]:
        """Ids of the tracks that could be subjects, most salient first; raises Drop when there are none."""
        p: MotionSegmentParams = self.params
        credible = (stats["persistence"] >= p.min_persistence) & (stats["area"] >= p.min_area_fraction)
        if not credible.any():
            best = int(np.argmax(stats["salience"]))
            raise Drop("no_foreground", f"nothing credible moves independently of the camera: the most salient of "
                       f"{len(credible)} moving regions covers {stats['area'][best]:.4f} of the frame in "
                       f"{stats['persistence'][best]:.0%} of the frames (a subject needs >= {p.min_area_fraction} "
                       f"in >= {p.min_persistence:.0%})")
        ranked = np.argsort(-stats["salience"])
        return [int(i) + 1 for i in ranked if credible[i]]

    def _choose(self, stats: dict[str, np.ndarray]) -> list[int]:
        """Ids of the tracks that become layers: the most salient credible ones, within `max_instances`."""
        p: MotionSegmentParams = self.params
        ranked = self._credible(stats)[: p.max_instances]
        salience = stats["salience"][np.array(ranked) - 1]
        return [i for i, s in zip(ranked, salience) if s >= p.secondary_salience * salience[0]]


def independent_motion(residual: np.ndarray, flow: np.ndarray, backward: np.ndarray, memory: float,
                       noise_floor: float) -> np.ndarray:
    """[T, h, w] how far each pixel moves on its own around its frame, in units of the frame's noise.

    `residual` [T-1, h, w, 2] is summed along the trajectory through each pixel (`flow` t -> t+1,
    `backward` t+1 -> t) into the future and out of the past, decaying by `memory` per frame:
    steady motion adds up (slow subjects show, brief pauses are bridged) while jitter does not.
    The first and last frames see time in one direction only, so they also need the evidence
    of their neighbour, carried over by the flow.
    """
    future = np.zeros((len(residual) + 1, *residual.shape[1:]), np.float32)
    past = np.zeros_like(future)
    for t in reversed(range(len(residual))):
        future[t] = residual[t] + memory * backward_warp(future[t + 1], flow[t])
    for t in range(len(residual)):
        past[t + 1] = backward_warp(memory * past[t] - residual[t], backward[t])
    ahead, behind = np.linalg.norm(future, axis=-1), np.linalg.norm(past, axis=-1)
    both = np.minimum(ahead, behind)
    both[0] = np.minimum(ahead[0], backward_warp(both[1], flow[0]))
    both[-1] = np.minimum(behind[-1], backward_warp(both[-2], backward[-1]))
    noise = np.median(both, axis=(1, 2), keepdims=True) + noise_floor
    return both / noise


def label_regions(moving: np.ndarray, camera_error: np.ndarray, flow_error: np.ndarray,
                  min_support: float) -> np.ndarray:
    """[T, h, w] int32 connected regions of each frame's moving pixels (0: still), numbered from 1 per frame.

    Specks are opened away, and so is every region whose own motion does not explain its change
    in brightness (support below `min_support`): flow drifting over textureless or repetitive
    surfaces looks the same whether it follows the camera or the flow.
    """
    kernel = disk(1)
    labels = np.empty(moving.shape, np.int32)
    for t, mask in enumerate(moving.astype(np.uint8)):
        count, regions = cv2.connectedComponents(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), connectivity=8)
        index = np.arange(1, count)
        camera, flow = (ndimage.sum_labels(e[t], regions, index) for e in (camera_error, flow_error))
        pixels = ndimage.sum_labels(np.ones_like(regions), regions, index)
        support = (camera - flow) / (camera + BRIGHTNESS_NOISE * pixels)
        keep = np.concatenate([[False], support >= min_support])
        labels[t] = (np.cumsum(keep) * keep)[regions]
    return labels


def link_regions(labels: np.ndarray, flow: np.ndarray, min_overlap: float) -> np.ndarray:
    """[T, h, w] int32 track ids (0: still): regions linked from frame to frame where the flow carries one onto another.

    Linking is transitive, so a track is a connected group in the graph of (frame, region) nodes.
    """
    offsets = np.concatenate([[0], np.cumsum(labels.reshape(len(labels), -1).max(axis=1) + 1)])
    nodes = labels + offsets[:-1, None, None]
    areas = np.bincount(nodes.ravel(), minlength=offsets[-1])
    links = []
    for t in range(len(flow)):
        carried = backward_warp(labels[t + 1].astype(np.float32), flow[t], cv2.INTER_NEAREST).astype(np.int64)
        both = (labels[t] > 0) & (carried > 0)
        pairs = np.stack([nodes[t][both], carried[both] + offsets[t + 1]])
        pairs, overlap = np.unique(pairs, axis=1, return_counts=True)
        links.append(pairs[:, overlap >= min_overlap * areas[pairs].min(axis=0)])
    rows, cols = np.concatenate(links, axis=1)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(offsets[-1], offsets[-1]))
    _, component = connected_components(graph, directed=False)
    # Number the tracks from 1; the still pixels (label 0 of every frame) are track 0.
    still = np.zeros(offsets[-1], bool)
    still[offsets[:-1]] = True
    ids = np.zeros(offsets[-1], np.int32)
    ids[~still] = np.unique(component[~still], return_inverse=True)[1] + 1
    return ids[nodes]


def brightness_errors(grey: np.ndarray, flow: np.ndarray, backward: np.ndarray,
                      camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, h, w] |I_t+1 - I_t| after following the camera alone, and after following the flow.

    The last frame has no successor and takes the errors of the pair before, carried along the flow.
    """
    grey = grey.astype(np.float32)
    errors = np.zeros((2, *grey.shape), np.float32)
    for t in range(len(flow)):
        errors[0, t] = np.abs(backward_warp(grey[t + 1], camera[t]) - grey[t])
        errors[1, t] = np.abs(backward_warp(grey[t + 1], flow[t]) - grey[t])
    errors[:, -1] = [backward_warp(e, backward[-1]) for e in errors[:, -2]]
    return errors[0], errors[1]


def track_stats(tracks: np.ndarray) -> dict[str, np.ndarray]:
    """Per track (id - 1): persistence, mean area while seen (share of the frame) and salience.

    Salience favours what a viewer would call the subject: seen in many frames, large, near the
    centre, and not mostly within the border strip where camera motion reveals new pixels.
    """
    num_frames, h, w = tracks.shape
    n = int(tracks.max())
    index = (np.arange(num_frames)[:, None, None] * (n + 1) + tracks).ravel()

    def per_frame(weights: np.ndarray | None = None) -> np.ndarray:
        """[T, n] sum of `weights` (or count) over each track's pixels in each frame."""
        flat = None if weights is None else np.broadcast_to(weights, tracks.shape).ravel()
        return np.bincount(index, flat, num_frames * (n + 1)).reshape(num_frames, n + 1)[:, 1:]

    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    margin = max(2, round(0.05 * min(h, w)))
    border = np.ones((h, w))
    border[margin:-margin, margin:-margin] = 0
    area = per_frame()
    total = np.maximum(area.sum(axis=0), 1)
    seen = area > 0
    persistence = seen.mean(axis=0)
    mean_area = total / np.maximum(seen.sum(axis=0), 1) / (h * w)
    offcentre = np.hypot(per_frame(xs).sum(axis=0) / total / w - 0.5, per_frame(ys).sum(axis=0) / total / h - 0.5)
    on_border = per_frame(border).sum(axis=0) / total
    centrality = 1 - offcentre / np.hypot(0.5, 0.5) / 2  # 1 at the centre, 1/2 in a corner
    salience = persistence * np.sqrt(mean_area) * centrality * (1 - on_border)
    return {"persistence": persistence, "area": mean_area, "salience": salience}


def join_tracks(tracks: np.ndarray, residual: np.ndarray, ids: list[int], touch: float, reach: float,
                coherence: float, noise: float) -> np.ndarray:
    """Join tracks that are one subject cut in two: by an occluder in front of it, or along a part that
    barely moves (the hub of a spinning object). `ids` are the candidates, most salient first.

    A track joins a more salient one when, in most of the frames they share, the two touch (within
    `touch` pixels) or are within `reach` and move together (mean residual motions differ by at
    most `coherence` of the faster, plus the flow's `noise`).
    """
    together, shared = np.zeros((2, len(ids), len(ids)))
    for t in range(len(residual)):
        present = [(a, tracks[t] == i) for a, i in enumerate(ids)]
        present = [(a, m) for a, m in present if m.any()]
        velocity = {a: residual[t][m].mean(axis=0) for a, m in present}
        for a, mask_a in present:
            distance = distance_to(mask_a)
            for b, mask_b in present:
                if b <= a:
                    continue
                gap = distance[mask_b].min()
                difference = np.linalg.norm(velocity[a] - velocity[b])
                speed = max(np.linalg.norm(velocity[a]), np.linalg.norm(velocity[b]))
                shared[a, b] += 1
                together[a, b] += gap <= touch or (gap <= reach and difference <= coherence * speed + noise)
    rank = {i: r for r, i in enumerate(ids)}
    return merge_tracks(tracks, ids, lambda a, b: bool(shared[rank[a], rank[b]])
                        and together[rank[a], rank[b]] >= shared[rank[a], rank[b]] / 2)


def join_pauses(tracks: np.ndarray, backward: np.ndarray, ids: list[int], min_overlap: float) -> np.ndarray:
    """Join a track that ends to one that starts later where the first, carried along the flow
    through the gap, lands on the second: one subject that stood still (or hid) in between, whose
    motion evidence faded. `ids` are the candidates, most salient first."""
    frames = {i: np.flatnonzero((tracks == i).any(axis=(1, 2))) for i in ids}

    def paused(a: int, b: int) -> bool:
        first, second = sorted((a, b), key=lambda i: frames[i][0])
        end, start = frames[first][-1], frames[second][0]
        if start <= end:  # they overlap in time: not a pause
            return False
        carried = (tracks[end] == first).astype(np.float32)
        for t in range(end, start):
            carried = backward_warp(carried, backward[t])
        arrived, waiting = carried > 0.5, tracks[start] == second
        return (arrived & waiting).sum() >= min_overlap * max(1, min(arrived.sum(), waiting.sum()))

    return merge_tracks(tracks, ids, paused)


def merge_tracks(tracks: np.ndarray, ids: list[int], same: Callable[[int, int], bool]) -> np.ndarray:
    """Each track of `ids` (most salient first) joins the first more salient one that `same(a, b)` pairs
    it with, taking that one's id (or the id it has joined in turn)."""
    joined = tracks.copy()
    owner = {i: i for i in ids}
    for rank, b in enumerate(ids):
        for a in ids[:rank]:
            if same(a, b):
                owner[b] = owner[a]
                joined[tracks == b] = owner[b]
                break
    return joined


def distance_to(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel of `mask`."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)


def merge_fragments(coarse: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Moving regions outside every layer join the nearest layer within `radius` pixels, when smaller than it."""
    merged = coarse.copy()
    for t in range(coarse.shape[1]):
        loose = np.unique(labels[t][(labels[t] > 0) & ~coarse[:, t].any(axis=0)])
        if not len(loose):
            continue
        distance = np.stack([ndimage.minimum(distance_to(m), labels[t], loose) for m in coarse[:, t]])
        owner = distance.argmin(axis=0)
        sizes = ndimage.sum_labels(np.ones_like(labels[t]), labels[t], loose)
        joins = (distance.min(axis=0) <= radius) & (sizes < coarse[:, t].sum(axis=(1, 2))[owner])
        for k in range(len(coarse)):
            merged[k, t] |= np.isin(labels[t], loose[joins & (owner == k)])
    return merged


def temporal_vote(mask: np.ndarray, flow: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """[T, h, w] bool: foreground where most of the frame and its two neighbours (followed along the flow) say so."""
    soft = mask.astype(np.float32)
    votes, counts = soft.copy(), np.ones(len(mask))
    for t in range(len(flow)):
        votes[t] += backward_warp(soft[t + 1], flow[t])
        votes[t + 1] += backward_warp(soft[t], backward[t])
        counts[t:t + 2] += 1
    return votes > counts[:, None, None] / 2


def fill_gaps(mask: np.ndarray, flow: np.ndarray, backward: np.ndarray, max_gap: int,
              min_share: float = 0.5) -> np.ndarray:
    """[T, h, w] bool: runs of frames where the subject shows less than `min_share` of its usual
    area (it paused, so barely moved; or hid) take the mask of the frame before, or else after,
    carried along the flow. A run between two sightings is always bridged; one at the start or
    end of the clip only up to `max_gap` frames, beyond which the subject is taken to be gone."""
    area = mask.sum(axis=(1, 2))
    weak = area < min_share * np.median(area[area > 0]) if area.any() else np.zeros(len(mask), bool)
    runs = ndimage.label(weak)[0]
    at_an_end = np.isin(runs, [runs[0], runs[-1]])  # label 0 (not weak) never matters: weak is False there
    weak &= (np.bincount(runs)[runs] <= max_gap) | ~at_an_end
    filled = mask.copy()
    for t in range(1, len(mask)):
        if weak[t] and not weak[t - 1]:
            filled[t] |= backward_warp(filled[t - 1].astype(np.float32), backward[t - 1]) > 0.5
            weak[t] = False
    for t in reversed(range(len(mask) - 1)):
        if weak[t] and not weak[t + 1]:
            filled[t] |= backward_warp(filled[t + 1].astype(np.float32), flow[t]) > 0.5
            weak[t] = False
    return filled


def upsample(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[..., h, w] bool masks to [..., H, W]: bilinear on 0/1, then thresholded, so outlines come out smooth."""
    height, width = size
    flat = masks.reshape(-1, *masks.shape[-2:]).astype(np.float32)
    big = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in flat]) > 0.5
    return big.reshape(*masks.shape[:-2], height, width)


def carry_peak(values: np.ndarray, flow: np.ndarray, backward: np.ndarray, memory: float) -> np.ndarray:
    """[T, h, w] the largest of `values` along each pixel's trajectory, shrinking by `memory` per frame away."""
    ahead, behind = values.copy(), values.copy()
    for t in range(1, len(values)):
        behind[t] = np.maximum(values[t], memory * backward_warp(behind[t - 1], backward[t - 1]))
    for t in reversed(range(len(values) - 1)):
        ahead[t] = np.maximum(values[t], memory * backward_warp(ahead[t + 1], flow[t]))
    return np.maximum(ahead, behind)


def trusted_cores(coarse: np.ndarray, explained: np.ndarray, radius: int) -> np.ndarray:
    """[K, T, h, w] the part of each layer that its pixels vouch for: where the motion explains the
    change in brightness, with gaps up to `radius` closed and holes filled (a subject's plain inside
    changes little but is enclosed by an outline that does). What is left, typically flow that bled
    into textureless background, is for the colours to decide."""
    kernel = disk(radius)
    cores = np.zeros_like(coarse)
    for k, t in np.ndindex(coarse.shape[:2]):
        closed = cv2.morphologyEx((coarse[k, t] & explained[t]).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
        cores[k, t] = ndimage.binary_fill_holes(closed) & coarse[k, t]
    return cores


def refine_masks(frames: np.ndarray, coarse: np.ndarray, cores: np.ndarray, p: MotionSegmentParams) -> np.ndarray:
    """[K, T, H, W] full-resolution masks snapped to colour edges; layers stay disjoint (earlier layers win)."""
    rough, trusted = upsample(coarse, frames.shape[1:3]), upsample(cores, frames.shape[1:3])
    band = max(2, round(p.refine_band * min(frames.shape[1:3])))
    masks = np.zeros_like(rough)
    for t, frame in enumerate(frames):
        for k in range(len(rough)):
            others = rough[:, t].any(axis=0) & ~rough[k, t] | masks[:k, t].any(axis=0)
            masks[k, t] = grabcut_band(frame, rough[k, t], trusted[k, t], others, band, p.refine_iterations,
                                       p.refine_pixels)
    return masks


def grabcut_band(frame: np.ndarray, rough: np.ndarray, trusted: np.ndarray, others: np.ndarray, band: int,
                 iterations: int, max_pixels: int) -> np.ndarray:
    """GrabCut on a crop around the motion mask `rough`, starting from its `trusted` part: foreground
    for sure deep inside the trusted part, background for sure `band` pixels beyond `rough` and on
    `others`, free in between.

    A crop over `max_pixels` is shrunk first: GrabCut's cost grows with the crop, while on a
    large subject a pixel or two of boundary error hardly changes the mask.
    """
    if not rough.any():
        return rough
    y0, y1, x0, x1 = padded_box(rough, 2 * band)
    scale = min(1.0, np.sqrt(max_pixels / ((x1 - x0) * (y1 - y0))))
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    shrink = lambda mask: cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    inside, core = shrink(rough).astype(np.uint8), shrink(trusted)
    reach = max(2, round(band * scale))
    kernel = disk(reach)
    trimap = np.full(inside.shape, cv2.GC_BGD, np.uint8)
    trimap[cv2.dilate(inside, kernel) > 0] = cv2.GC_PR_BGD
    trimap[core] = cv2.GC_PR_FGD
    trimap[core & (cv2.erode(inside, kernel) > 0)] = cv2.GC_FGD
    trimap[shrink(others)] = cv2.GC_BGD
    foreground = trimap % 2 == 1  # GC_FGD and GC_PR_FGD
    if foreground.all() or not foreground.any():  # GrabCut needs colours of both sides
        return rough
    crop = cv2.resize(frame[y0:y1, x0:x1, ::-1], size, interpolation=cv2.INTER_AREA)
    cv2.grabCut(crop, trimap, None, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_MASK)
    refined = np.zeros_like(rough)
    foreground = (trimap % 2 == 1).astype(np.float32)
    refined[y0:y1, x0:x1] = cv2.resize(foreground, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 0.5
    return refined


def confidence(moving: np.ndarray, coarse: np.ndarray, flow: np.ndarray) -> float:
    """How sure the segmentation is, in [0, 1]: the share of motion explained times temporal stability.

    The first factor is the share of all independently moving pixels that the layers cover:
    low when much else moves too (parallax the camera model missed, crowds, foliage). The
    second is the IoU of the layers' union with the next frame's, followed along the flow,
    averaged over the clip: low when the masks jump about.
    """
    union = coarse.any(axis=0)
    covered = (moving & union).sum() / max(int(moving.sum()), 1)
    ious = []
    for t in range(len(flow)):
        carried = backward_warp(union[t + 1].astype(np.float32), flow[t]) > 0.5
        ious.append((carried & union[t]).sum() / max(int((carried | union[t]).sum()), 1))
    return float(covered * np.mean(ious))
