"""`vidlayer eval-generation`: how well generated layered videos of the toy domain follow their prompts.

Every measurement reads the generated layers alone; the prompt (the toy scene asked for) says
what each should find. Foreground layer k answers the prompt's k-th object. The measurements,
each made simple enough to trust on the toy domain (see `vidlayer.toy`):

- coherence: mean |full - composite(fg, alpha, bg)| in 0..1, layer 0 on top.
- colour: circular mean hue of the fg layer inside alpha > 0.5, weighted by saturation x value;
  the nearest of the six named hues.
- shape: each frame's matte (alpha > 0.5) centred on its centroid and scaled to a fixed area is
  compared by IoU with the four shapes rendered at every angle (rotation-aware); the shape with
  the best area-weighted mean IoU over frames.
- motion: least-squares trends over the clip of the matte's log area ("zoom" past a factor of
  e^0.5), then its centroid (left/right/up/down past 10% of the frame), then the best-matching
  template angle ("rotate" past 20 degrees); otherwise "still".
- texture: the most likely class under a diagonal Gaussian fitted to clean renders of each class,
  of four features that ignore the texture's orientation: gradient orientation coherence in
  doubled and quadrupled angle, share of spectral power in the four strongest frequencies, and
  power-weighted mean frequency.
- background colour: circular mean hue weighted by saturation; drift: one translation fitted by
  least squares to brightness constancy over all consecutive frames (whole-frame Lucas-Kanade),
  its dominant axis; "still" under 0.15 px a frame.
- bg_leak: share of background pixels that look like a requested object: saturation > 0.6,
  value > 0.5 and hue within 30 degrees of an object's hue (toy backgrounds are muted, so none do).
- fg_texture: mean gradient magnitude (0..1 per pixel) of the fg layer inside its matte eroded
  by one pixel: toy objects are flat, so any texture there came from elsewhere.
- alpha_edge_width: pixels with 0.1 < alpha < 0.9 per pixel of outline of alpha > 0.5, i.e. the
  width of the soft transition in pixels (about 1 for a crisp anti-aliased edge).
- alpha_soft: pixels with 0.05 < alpha < 0.95 farther than one pixel from the outline, per pixel
  of alpha > 0.5. The outline is the true matte's when the truth is known, else the matte's own,
  so a binary matte scores 0 either way.
- temporal_change: mean |fg[t+1] - fg[t]| (0..1) inside the intersection of the two frames'
  mattes: toy objects keep their colour, so no motion compensation is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidlayer.evaluation.evaluate import Prediction, finite_mean
from vidlayer.evaluation.metrics import composite_error
from vidlayer.io.shards import read_shard
from vidlayer.io.video import decode_video
from vidlayer.toy import (COLOUR_HUES, DIRECTION_VECTORS, SHAPES, TEXTURES, ToyScene, clean_backgrounds,
                          rasterize, shape_outline, shape_symmetry)

TEMPLATE_SIZE = 48  # canonical frame the mattes are scaled into for shape matching
TEMPLATE_AREA = math.pi * 12**2  # every template and matte is scaled to this area (pixels)
TEMPLATE_STEP = 3.0  # degrees between template angles
MIN_MATTE_PIXELS = 6  # a frame with a smaller matte says nothing about shape or motion
ZOOM_LOG_AREA = 0.5
MOVE_SHARE = 0.1  # of the frame's shorter side
ROTATE_DEGREES = 20.0
DRIFT_PIXELS = 0.15  # per frame
DRIFT_BLUR = 1.0  # Gaussian sigma (pixels) that widens edges so a one-pixel shift stays in the linear range
LEAK_SATURATION, LEAK_VALUE, LEAK_HUE = 0.6, 0.5, 30.0
TEXTURE_REFERENCES = 24  # clean renders per class behind the texture classifier
TEXTURE_SPREAD = 0.03  # least spread of a texture feature, so that a near-constant one does not overrule the rest
TEXTURE_FRAMES = 4  # frames of a background the texture features are averaged over

ACCURACIES = ("colour", "shape", "motion")
BACKGROUND_ACCURACIES = ("texture", "bg_colour", "drift")
MEANS = ("coherence", "bg_leak", "fg_texture", "alpha_edge_width", "alpha_soft", "temporal_change")


@dataclass
class GeneratedSample:
    """A layered video to score (layer 0 on top) and the toy scene its prompt asked for."""

    key: str
    request: ToyScene
    full: np.ndarray  # [T, H, W, 3] uint8
    background: np.ndarray  # [T, H, W, 3] uint8
    foregrounds: np.ndarray  # [K, T, H, W, 3] uint8, straight colour
    alphas: np.ndarray  # [K, T, H, W] float in 0..1
    truth_alphas: np.ndarray | None = None  # [K, T, H, W], where known: says where the matte should be binary

    @classmethod
    def from_prediction(cls, prediction: Prediction) -> GeneratedSample:
        """A decoded shard sample; the request is its json's `toy` scene, else read from its captions."""
        meta = prediction.meta
        if "toy" in meta:
            request = ToyScene.from_json(meta["toy"])
        else:
            captions = meta["captions"]
            request = ToyScene.from_captions(captions["foreground"], captions["background"])
        return cls(prediction.key, request, prediction.full, prediction.background, prediction.foregrounds,
                   prediction.alphas)

    @classmethod
    def from_folder(cls, folder: str | Path) -> GeneratedSample:
        """A `vidlayer sample` output folder: full.mp4, background.mp4, fg0.mp4, alpha0.mp4, ... and sample.json."""
        folder = Path(folder)
        info = json.loads((folder / "sample.json").read_text())
        if "toy" in info:
            request = ToyScene.from_json(info["toy"])
        else:
            prompts = info["prompts"]
            request = ToyScene.from_captions(prompts["foregrounds"], prompts["background"])
        count = len(list(folder.glob("alpha*.mp4")))
        foregrounds = np.stack([decode_video(folder / f"fg{i}.mp4") for i in range(count)])
        alphas = np.stack([decode_video(folder / f"alpha{i}.mp4", grey=True) for i in range(count)])
        return cls(folder.name, request, decode_video(folder / "full.mp4"), decode_video(folder / "background.mp4"),
                   foregrounds, alphas.astype(np.float32) / 255)


def load_samples(path: str | Path) -> Iterator[GeneratedSample]:
    """Samples from a shard, a folder of shards (searched recursively), a sample folder or a folder of them."""
    path = Path(path)
    if path.is_file():
        yield from (GeneratedSample.from_prediction(Prediction.from_sample(s)) for s in read_shard(path))
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / "sample.json").exists():
        yield GeneratedSample.from_folder(path)
        return
    shards = sorted(path.rglob("shard-*.tar"))
    folders = sorted(p.parent for p in path.glob("*/sample.json"))
    if not shards and not folders:
        raise FileNotFoundError(f"{path} holds no shards (shard-*.tar) and no sample folders (*/sample.json)")
    for shard in shards:
        yield from load_samples(shard)
    for folder in folders:
        yield GeneratedSample.from_folder(folder)


# ---------------------------------------------------------------------------------------------
# Colour


def _hsv(frames: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 RGB to float HSV with hue in degrees and saturation, value in 0..1."""
    flat = frames.reshape(-1, 1, 3).astype(np.float32) / 255
    if not flat.size:  # an empty matte selects no pixel; OpenCV refuses empty images
        return np.zeros(frames.shape, np.float32)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2HSV).reshape(frames.shape)


def _nearest_hue(hues: np.ndarray, weights: np.ndarray) -> str | None:
    """The named colour nearest the weighted circular mean hue; None without weight."""
    if weights.sum() <= 1e-6:
        return None
    angles = np.radians(hues)
    mean = math.degrees(math.atan2(float((weights * np.sin(angles)).sum()), float((weights * np.cos(angles)).sum())))
    return min(COLOUR_HUES, key=lambda name: _hue_distance(COLOUR_HUES[name], mean))


def _hue_distance(a: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    return 180 - np.abs(np.mod(np.asarray(a) - b, 360) - 180)


def object_colour(foreground: np.ndarray, alpha: np.ndarray) -> str | None:
    """The colour name of [T, H, W, 3] straight colour inside [T, H, W] alpha > 0.5."""
    inside = alpha > 0.5
    hsv = _hsv(foreground[inside])
    return _nearest_hue(hsv[:, 0], hsv[:, 1] * hsv[:, 2])


def background_colour(background: np.ndarray) -> str | None:
    """The colour name of a [T, H, W, 3] background: its saturation-weighted circular mean hue."""
    hsv = _hsv(background)
    return _nearest_hue(hsv[..., 0].ravel(), hsv[..., 1].ravel())


# ---------------------------------------------------------------------------------------------
# Shape and motion


@lru_cache(maxsize=None)
def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary templates of every shape at every distinct angle, equal in area, as the columns of [S*S, N];
    their shape indices [N] and angles [N]."""
    masks, shapes, angles = [], [], []
    centre = ((TEMPLATE_SIZE - 1) / 2,) * 2
    for index, shape in enumerate(SHAPES):
        unit = shape_outline(shape, 1.0)
        area = 0.5 * abs(np.dot(unit[:, 0], np.roll(unit[:, 1], 1)) - np.dot(unit[:, 1], np.roll(unit[:, 0], 1)))
        radius = math.sqrt(TEMPLATE_AREA / area)
        symmetry = shape_symmetry(shape)
        for angle in np.arange(0, symmetry, TEMPLATE_STEP) if symmetry else [0.0]:
            coverage = rasterize(shape_outline(shape, radius, angle), centre, TEMPLATE_SIZE, TEMPLATE_SIZE)
            masks.append((coverage > 0.5).ravel())
            shapes.append(index)
            angles.append(angle)
    # Integer counts: numpy multiplies them without BLAS, whose threads can stall on a busy machine.
    return np.ascontiguousarray(np.array(masks, np.int32).T), np.array(shapes), np.array(angles)


def _canonical(alpha: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
    """The [H, W] matte centred on its centroid and scaled to the template area, as a flat binary mask."""
    if np.count_nonzero(alpha > 0.5) < MIN_MATTE_PIXELS:
        return None
    area = float(alpha.sum())
    cx, cy = float((xs * alpha).sum() / area), float((ys * alpha).sum() / area)
    scale = math.sqrt(TEMPLATE_AREA / area)
    middle = (TEMPLATE_SIZE - 1) / 2
    warp = np.array([[scale, 0, middle - scale * cx], [0, scale, middle - scale * cy]], np.float32)
    canonical = cv2.warpAffine(alpha.astype(np.float32), warp, (TEMPLATE_SIZE, TEMPLATE_SIZE), flags=cv2.INTER_LINEAR)
    return (canonical > 0.5).ravel().astype(np.int32)


@dataclass
class ShapeReading:
    """What the matte's frames look like: the best shape, its IoU, and its best angle per frame (NaN if empty)."""

    shape: str | None
    iou: float
    angles: np.ndarray


def read_shape(alpha: np.ndarray) -> ShapeReading:
    """Match every frame of a [T, H, W] matte against the templates; the shape with the best area-weighted IoU."""
    masks, shape_of, angle_of = _templates()
    ys, xs = np.mgrid[:alpha.shape[1], :alpha.shape[2]]
    frames = [_canonical(a, xs, ys) for a in alpha]
    valid = [t for t, m in enumerate(frames) if m is not None]
    angles = np.full(len(alpha), np.nan)
    if not valid:
        return ShapeReading(None, 0.0, angles)
    canonical = np.stack([frames[t] for t in valid])
    inter = canonical @ masks
    iou = inter / (canonical.sum(1, keepdims=True) + masks.sum(0)[None] - inter)
    weights = alpha[valid].sum(axis=(1, 2))
    best_per_shape = np.stack([iou[:, shape_of == s].max(axis=1) for s in range(len(SHAPES))], axis=1)
    score = (weights[:, None] * best_per_shape).sum(0) / weights.sum()
    shape = int(np.argmax(score))
    columns = np.flatnonzero(shape_of == shape)
    angles[valid] = angle_of[columns[np.argmax(iou[:, columns], axis=1)]]
    return ShapeReading(SHAPES[shape], float(score[shape]), angles)


def _trend(values: np.ndarray) -> float:
    """Least-squares change of `values` (NaN for missing frames) from the first frame to the last."""
    t = np.flatnonzero(np.isfinite(values))
    if len(t) < 2:
        return 0.0
    slope = np.polyfit(t, values[t], 1)[0]
    return float(slope * (len(values) - 1))


def read_motion(alpha: np.ndarray, shape: ShapeReading | None = None) -> str | None:
    """"zoom"/"zoom out", a direction, "rotate" or "still" for a [T, H, W] matte; None when it is empty."""
    shape = shape or read_shape(alpha)
    if shape.shape is None:
        return None
    visible = np.array([np.count_nonzero(a > 0.5) >= MIN_MATTE_PIXELS for a in alpha])
    area = alpha.sum(axis=(1, 2))
    log_area = _trend(np.where(visible, np.log(np.maximum(area, 1e-6)), np.nan))
    if abs(log_area) > ZOOM_LOG_AREA:
        return "zoom" if log_area > 0 else "zoom out"
    ys, xs = np.mgrid[:alpha.shape[1], :alpha.shape[2]]
    safe = np.where(visible, area, 1.0)
    dx = _trend(np.where(visible, (alpha * xs).sum(axis=(1, 2)) / safe, np.nan))
    dy = _trend(np.where(visible, (alpha * ys).sum(axis=(1, 2)) / safe, np.nan))
    if math.hypot(dx, dy) > MOVE_SHARE * min(alpha.shape[1:]):
        direction = np.array([dx, dy]) / math.hypot(dx, dy)
        return max(DIRECTION_VECTORS, key=lambda name: float(np.dot(DIRECTION_VECTORS[name], direction)))
    symmetry = shape_symmetry(shape.shape)
    if symmetry:
        # Unwrap the angles modulo the shape's symmetry before fitting.
        angles = shape.angles * (360 / symmetry)
        valid = np.isfinite(angles)
        angles[valid] = np.degrees(np.unwrap(np.radians(angles[valid]))) * (symmetry / 360)
        if abs(_trend(angles)) > ROTATE_DEGREES:
            return "rotate"
    return "still"


# ---------------------------------------------------------------------------------------------
# Background


def texture_features(background: np.ndarray) -> np.ndarray:
    """Four numbers that do not change when a texture turns, averaged over a few frames.

    Orientation coherence of the gradients in doubled and quadrupled angle, |sum m e^(2i theta)| / sum m and
    the same with 4i (stripes score 1 and 1, checks 0 and 1, dots and clouds near 0), the share of spectral
    power in the four strongest frequencies (high for periodic textures), and the power-weighted mean
    frequency in cycles per 10 pixels (low for clouds).
    """
    picks = np.unique(np.linspace(0, len(background) - 1, TEXTURE_FRAMES).round().astype(int))
    height, width = background.shape[1:3]
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    radius = np.hypot(fx, fy)
    features = []
    for frame in background[picks]:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        magnitude, angle = np.hypot(gx, gy), np.arctan2(gy, gx)
        weight = max(float(magnitude.sum()), 1e-6)
        coherence = [abs((magnitude * np.exp(1j * n * angle)).sum()) / weight for n in (2, 4)]
        power = np.abs(np.fft.fft2((grey - grey.mean()) * window)) ** 2
        power[0, 0] = 0
        total = max(float(power.sum()), 1e-6)
        peaks = np.sort(power.ravel())[-4:].sum() / total
        features.append([*coherence, peaks, 10 * (radius * power).sum() / total])
    return np.mean(features, axis=0)


@lru_cache(maxsize=None)
def _texture_classifier(frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class feature means and spreads [C, F] of clean renders at this size (spreads at least TEXTURE_SPREAD)."""
    if height != width:
        raise ValueError(f"toy backgrounds are square, got {width}x{height}")
    per_class = [np.stack([texture_features(video) for video in clean_backgrounds(texture, TEXTURE_REFERENCES,
                                                                                  frames, height)])
                 for texture in TEXTURES]
    return np.stack([f.mean(0) for f in per_class]), np.maximum(np.stack([f.std(0) for f in per_class]), TEXTURE_SPREAD)


def background_texture(background: np.ndarray) -> str:
    """The most likely texture class under a diagonal Gaussian fitted to each class's clean renders."""
    means, spreads = _texture_classifier(min(len(background), TEXTURE_FRAMES), *background.shape[1:3])
    features = texture_features(background)
    cost = (((features - means) / spreads) ** 2 + 2 * np.log(spreads)).sum(1)
    return TEXTURES[int(np.argmin(cost))]


def background_drift(background: np.ndarray) -> str:
    """Direction of the background's mean motion, or "still": one translation fitted by least squares to
    brightness constancy over all consecutive frames (Lucas-Kanade over the whole frame, slightly blurred).

    Textures that show motion only across themselves (stripes) give that component, which is the drift."""
    grey = np.stack([cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), DRIFT_BLUR)
                     for f in background])
    if len(grey) < 2:
        return "still"
    middle = (grey[1:] + grey[:-1]) / 2
    gy, gx = np.gradient(middle, axis=(1, 2))
    gt = grey[1:] - grey[:-1]
    normal = np.array([[(gx * gx).sum(), (gx * gy).sum()], [(gx * gy).sum(), (gy * gy).sum()]])
    dx, dy = -np.linalg.pinv(normal, rcond=1e-3) @ np.array([(gx * gt).sum(), (gy * gt).sum()])
    if math.hypot(dx, dy) < DRIFT_PIXELS:
        return "still"
    return max(DIRECTION_VECTORS, key=lambda name: DIRECTION_VECTORS[name][0] * dx + DIRECTION_VECTORS[name][1] * dy)


# ---------------------------------------------------------------------------------------------
# Leakage, mattes and time


def background_leak(background: np.ndarray, colours: Iterable[str]) -> float:
    """Share of background pixels that look like one of the objects: saturated, bright, and of its hue."""
    hues = [COLOUR_HUES[c] for c in colours]
    if not hues:
        return 0.0
    hsv = _hsv(background)
    vivid = (hsv[..., 1] > LEAK_SATURATION) & (hsv[..., 2] > LEAK_VALUE)
    near = np.min([_hue_distance(hsv[..., 0], h) for h in hues], axis=0) < LEAK_HUE
    return float(np.mean(vivid & near))


def _erode(mask: np.ndarray) -> np.ndarray:
    """[T, H, W] bool masks shrunk by one pixel (3x3)."""
    return np.stack([cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in mask]).reshape(mask.shape)


def _dilate(mask: np.ndarray) -> np.ndarray:
    return np.stack([cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in mask]).reshape(mask.shape)


def foreground_texture(foreground: np.ndarray, alpha: np.ndarray) -> float | None:
    """Mean gradient magnitude (0..1 a pixel) of [T, H, W, 3] colour inside the one-pixel-eroded matte."""
    interior = _erode(alpha > 0.5)
    if not interior.any():
        return None
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in foreground]).astype(np.float32) / 255
    magnitude = np.stack([np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)) / 4 for g in grey])
    return float(magnitude[interior].mean())


def alpha_edge_width(alpha: np.ndarray) -> float | None:
    """Pixels of soft transition (0.1 < alpha < 0.9) per pixel of outline of alpha > 0.5: the edge's width."""
    mask = alpha > 0.5
    outline = np.count_nonzero(mask & ~_erode(mask))
    if not outline:
        return None
    return float(np.count_nonzero((alpha > 0.1) & (alpha < 0.9)) / outline)


def alpha_soft(alpha: np.ndarray, truth: np.ndarray | None = None) -> float | None:
    """Soft pixels (0.05 < alpha < 0.95) more than a pixel from the outline (the truth's, else the matte's own),
    per pixel of alpha > 0.5."""
    reference = (truth if truth is not None else alpha) > 0.5
    area = np.count_nonzero(alpha > 0.5)
    if not area:
        return None
    band = _dilate(reference) & ~_erode(reference)
    soft = (alpha > 0.05) & (alpha < 0.95) & ~band
    return float(np.count_nonzero(soft) / area)


def temporal_change(foreground: np.ndarray, alpha: np.ndarray) -> float | None:
    """Mean |fg[t+1] - fg[t]| (0..1) inside the intersection of consecutive mattes."""
    mask = alpha > 0.5
    both = mask[1:] & mask[:-1]
    if not both.any():
        return None
    change = np.abs(foreground[1:].astype(np.float32) - foreground[:-1].astype(np.float32)).mean(-1) / 255
    return float(change[both].mean())


# ---------------------------------------------------------------------------------------------
# Scoring


def score_sample(sample: GeneratedSample) -> dict[str, Any]:
    """Every measurement of one sample against its request, per object and as sample-level means."""
    request = sample.request
    objects = []
    for k, wanted in enumerate(request.objects):
        if k >= len(sample.alphas):
            objects.append({"requested": asdict(wanted), "measured": None, "colour": 0.0, "shape": 0.0,
                            "motion": 0.0})
            continue
        alpha, foreground = sample.alphas[k], sample.foregrounds[k]
        shape = read_shape(alpha)
        measured = {"colour": object_colour(foreground, alpha), "shape": shape.shape,
                    "motion": read_motion(alpha, shape), "shape_iou": shape.iou}
        objects.append({"requested": asdict(wanted), "measured": measured,
                        **{name: float(measured[name] == getattr(wanted, name)) for name in ACCURACIES}})
    truth = sample.truth_alphas
    layers = range(len(sample.alphas))
    bg = request.background
    measured_bg = {"texture": background_texture(sample.background), "bg_colour": background_colour(sample.background),
                   "drift": background_drift(sample.background)}
    return {
        "sample": sample.key,
        "split": sample.request.split,  # "test" when the prompt pairs attributes that training never did
        "layers": len(sample.alphas),
        "requested_layers": len(request.objects),
        "objects": objects,
        "background": {"requested": {"texture": bg.texture, "bg_colour": bg.colour, "drift": bg.drift},
                       "measured": measured_bg},
        **{name: finite_mean([o[name] for o in objects]) for name in ACCURACIES},
        "texture": float(measured_bg["texture"] == bg.texture),
        "bg_colour": float(measured_bg["bg_colour"] == bg.colour),
        "drift": float(measured_bg["drift"] == bg.drift),
        "coherence": composite_error(sample.full, sample.foregrounds, sample.alphas, sample.background),
        "bg_leak": background_leak(sample.background, [o.colour for o in request.objects]),
        "fg_texture": finite_mean([foreground_texture(sample.foregrounds[k], sample.alphas[k]) for k in layers]),
        "alpha_edge_width": finite_mean([alpha_edge_width(sample.alphas[k]) for k in layers]),
        "alpha_soft": finite_mean([alpha_soft(sample.alphas[k], None if truth is None else truth[k]) for k in layers]),
        "temporal_change": finite_mean([temporal_change(sample.foregrounds[k], sample.alphas[k]) for k in layers]),
    }


@dataclass
class GenerationEvaluation:
    """Per-sample rows and their summary."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Object accuracies over all requested objects, background accuracies and the other means over samples,
        overall and per split."""
        result = _summarise(self.rows)
        splits = sorted({r["split"] for r in self.rows})
        if splits:
            result["by_split"] = {s: _summarise([r for r in self.rows if r["split"] == s]) for s in splits}
        return result


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    objects = [o for r in rows for o in r["objects"]]
    return {
        "samples": len(rows),
        "objects": len(objects),
        **{f"{name}_accuracy": finite_mean([o[name] for o in objects]) for name in ACCURACIES},
        **{f"{name}_accuracy": finite_mean([r[name] for r in rows]) for name in BACKGROUND_ACCURACIES},
        **{name: finite_mean([r[name] for r in rows]) for name in MEANS},
    }


def evaluate_generation(samples: Iterable[GeneratedSample],
                        on_sample: Callable[[dict[str, Any]], None] | None = None) -> GenerationEvaluation:
    """Score every sample; `on_sample(row)` is called after each (for a progress bar)."""
    evaluation = GenerationEvaluation()
    for sample in samples:
        row = score_sample(sample)
        evaluation.rows.append(row)
        if on_sample is not None:
            on_sample(row)
    return evaluation
