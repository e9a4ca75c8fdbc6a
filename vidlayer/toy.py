"""A toy domain of layered videos with exact ground truth, for reproducing the paper's claims cheaply.

A scene is one to three flat-coloured objects (shape x colour x motion) over a drifting
two-tone texture. Every attribute is named in the captions ("a red star moving left",
"blue stripes drifting down"), so a model trained on these shards can be asked for any
combination, and `vidlayer.evaluation.generation` can read each attribute back off the
generated layers.

Rendering choices the metrics rely on:
- objects are fully saturated hues 60 degrees apart, so hue alone names an object's colour;
  backgrounds use the same hue names but muted (saturation at most 0.5), so object colour in a
  background layer is leakage, not texture;
- the foreground layer is the object's colour over the whole frame (straight colour with no
  fringe); only its alpha carries the shape;
- mattes are binary with a thin anti-aliased edge: 4x4 supersampled coverage, so pixels more
  than one pixel from the outline are exactly 0 or 1;
- objects stay wholly inside the frame for the whole clip.

Held-out split: a sample belongs to the test split when one of its objects has a (shape, colour)
pair in `HELD_OUT_SHAPE_COLOUR` or a (colour, motion) pair in `HELD_OUT_COLOUR_MOTION`. Training
samples never contain such an object, so the test split asks for attribute combinations the
model never saw together, while every single attribute value is seen in training. A circle
never rotates (it would look still).

Shards are written exactly as `vidlayer build` writes them (through the write stage), to
OUT/train/ and OUT/test/, with the scene under the json's `toy` key.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import vidlayer
from vidlayer.clip import Captions, Clip, VideoInfo
from vidlayer.io.shards import ShardSink, stamp_sample
from vidlayer.layers import composite
from vidlayer.stages.write import Write, WriteParams

SHAPES = ("circle", "square", "triangle", "star")
COLOUR_HUES = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}
COLOURS = tuple(COLOUR_HUES)
MOTION_PHRASES = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
                  "zoom": "zooming in", "rotate": "rotating"}
MOTIONS = tuple(MOTION_PHRASES)
TEXTURES = ("stripes", "checks", "dots", "waves", "clouds")
DRIFTS = ("left", "right", "up", "down")
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

# Each colour is held out once with a shape (one pair per shape) and once with a motion (one pair per motion).
HELD_OUT_SHAPE_COLOUR = frozenset({("circle", "blue"), ("square", "red"), ("triangle", "green"), ("star", "magenta")})
HELD_OUT_COLOUR_MOTION = frozenset({("red", "down"), ("yellow", "zoom"), ("green", "left"), ("cyan", "rotate"),
                                    ("blue", "up"), ("magenta", "right")})

SPLITS = ("train", "test")
FOREGROUND_COUNTS, FOREGROUND_ODDS = (1, 2, 3), (0.5, 0.3, 0.2)
OBJECT_SATURATION, OBJECT_VALUE = 1.0, 1.0
PATTERN_SATURATION, PATTERN_VALUE = 0.5, 0.8  # the texture's bright tone
BASE_SATURATION, BASE_VALUE = 0.35, 0.35  # the texture's dark tone
SUPERSAMPLING = 4  # matte edges: coverage of a 4x4 grid per pixel
STAR_INNER_RADIUS = 0.45  # of the outer radius: fat points stay recognisable at 64x64
PLACEMENT_TRIES = 30
DEFAULT_FPS = 16.0  # the training loader's default, so no frame is resampled


@dataclass(frozen=True)
class ToyObject:
    """One foreground object as a prompt names it."""

    shape: str
    colour: str
    motion: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOUR_HUES or self.motion not in MOTION_PHRASES:
            raise ValueError(f"unknown object {self.shape!r}, {self.colour!r}, {self.motion!r}")
        if self.shape == "circle" and self.motion == "rotate":
            raise ValueError("a rotating circle looks still, so the toy domain has none")

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} {MOTION_PHRASES[self.motion]}"

    @property
    def held_out(self) -> bool:
        """Whether this object pairs attributes that only the test split shows together."""
        return ((self.shape, self.colour) in HELD_OUT_SHAPE_COLOUR
                or (self.colour, self.motion) in HELD_OUT_COLOUR_MOTION)


@dataclass(frozen=True)
class ToyBackground:
    """The background layer as a prompt names it."""

    texture: str
    colour: str
    drift: str

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES or self.colour not in COLOUR_HUES or self.drift not in DRIFTS:
            raise ValueError(f"unknown background {self.texture!r}, {self.colour!r}, {self.drift!r}")

    @property
    def caption(self) -> str:
        return f"{self.colour} {self.texture} drifting {self.drift}"


ALL_OBJECTS = tuple(ToyObject(s, c, m) for s, c, m in product(SHAPES, COLOURS, MOTIONS)
                    if not (s == "circle" and m == "rotate"))
TRAIN_OBJECTS = tuple(o for o in ALL_OBJECTS if not o.held_out)
HELD_OUT_OBJECTS = tuple(o for o in ALL_OBJECTS if o.held_out)

_OBJECT_CAPTION = re.compile(rf"^a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) "
                             rf"({'|'.join(MOTION_PHRASES.values())})$")
_BACKGROUND_CAPTION = re.compile(rf"^({'|'.join(COLOURS)}) ({'|'.join(TEXTURES)}) drifting ({'|'.join(DRIFTS)})$")


@dataclass(frozen=True)
class ToyScene:
    """What a sample shows, and so what a prompt asks for: objects top layer first, then the background."""

    objects: tuple[ToyObject, ...]
    background: ToyBackground

    @property
    def split(self) -> str:
        return "test" if any(o.held_out for o in self.objects) else "train"

    def captions(self) -> Captions:
        """Per-layer captions and the full one: "a red star moving left and ... over blue stripes drifting down"."""
        foreground = [o.caption for o in self.objects]
        return Captions(full=f"{' and '.join(foreground)} over {self.background.caption}", foreground=foreground,
                        background=self.background.caption)

    def to_json(self) -> dict[str, Any]:
        return {"objects": [asdict(o) | {"held_out": o.held_out} for o in self.objects],
                "background": asdict(self.background), "split": self.split}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToyScene:
        return cls(tuple(ToyObject(o["shape"], o["colour"], o["motion"]) for o in data["objects"]),
                   ToyBackground(**{k: data["background"][k] for k in ("texture", "colour", "drift")}))

    @classmethod
    def from_captions(cls, foreground: list[str], background: str) -> ToyScene:
        """Read a scene back from its layer captions, so prompts alone say what was asked for."""
        objects = []
        for caption in foreground:
            match = _OBJECT_CAPTION.match(caption.strip())
            if not match:
                raise ValueError(f"not a toy object caption: {caption!r}")
            motion = next(m for m, phrase in MOTION_PHRASES.items() if phrase == match[3])
            objects.append(ToyObject(match[2], match[1], motion))
        match = _BACKGROUND_CAPTION.match((background or "").strip())
        if not match:
            raise ValueError(f"not a toy background caption: {background!r}")
        return cls(tuple(objects), ToyBackground(match[2], match[1], match[3]))


@dataclass
class ToyVideo:
    """A rendered scene: layers as `vidlayer.clip.Clip` holds them, layer 0 on top, and how it was drawn."""

    scene: ToyScene
    full: np.ndarray  # [T, H, W, 3] uint8, composite(foregrounds, alphas, background) rounded
    background: np.ndarray  # [T, H, W, 3] uint8
    foregrounds: np.ndarray  # [K, T, H, W, 3] uint8, each object's colour over the whole frame
    alphas: np.ndarray  # [K, T, H, W] float32, multiples of 1/255 so that lossless encoding keeps them
    layout: dict[str, Any] = field(default_factory=dict)  # per-object paths and background parameters


# ---------------------------------------------------------------------------------------------
# Colours and shapes


def hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB in 0..255 (float32) of a hue in degrees."""
    return np.array(colorsys.hsv_to_rgb(hue / 360, saturation, value), np.float32) * 255


def object_rgb(colour: str) -> np.ndarray:
    return hsv_colour(COLOUR_HUES[colour], OBJECT_SATURATION, OBJECT_VALUE)


def shape_outline(shape: str, radius: float, angle_deg: float = 0.0) -> np.ndarray:
    """[N, 2] (x, y) vertices around the origin, y down; `radius` is the circumradius, angle 0 is upright."""
    if shape == "circle":
        angles, radii = np.linspace(0, 2 * np.pi, 48, endpoint=False), np.ones(48)
    elif shape == "square":
        angles, radii = np.radians([45, 135, 225, 315]), np.ones(4)
    elif shape == "triangle":
        angles, radii = np.radians([-90, 30, 150]), np.ones(3)
    elif shape == "star":
        angles = np.radians(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2, STAR_INNER_RADIUS, 1.0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    angles = angles + np.radians(angle_deg)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * (radii[:, None] * radius)


def shape_symmetry(shape: str) -> float:
    """The smallest rotation in degrees that maps the shape onto itself (0 for a circle: any rotation does)."""
    return {"circle": 0.0, "square": 90.0, "triangle": 120.0, "star": 72.0}[shape]


def rasterize(outline: np.ndarray, centre: tuple[float, float], height: int, width: int) -> np.ndarray:
    """[H, W] float32 coverage of a polygon, from 4x4 samples per pixel; centre in pixel-centre coordinates."""
    s = SUPERSAMPLING
    canvas = np.zeros((height * s, width * s), np.uint8)
    shift = 4  # fillPoly's fixed-point bits
    points = ((outline + np.asarray(centre)) * s + (s - 1) / 2) * (1 << shift)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=shift)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


# ---------------------------------------------------------------------------------------------
# Sampling scenes


def sample_scene(rng: np.random.Generator, split: str, max_objects: int = 3) -> ToyScene:
    """A random scene of the split: test scenes have at least one held-out object, train scenes none.

    Objects in one scene have different colours.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    counts = [c for c in FOREGROUND_COUNTS if c <= max_objects]
    if not counts:
        raise ValueError(f"max_objects must be at least 1, got {max_objects}")
    odds = np.array([FOREGROUND_ODDS[FOREGROUND_COUNTS.index(c)] for c in counts])
    count = int(rng.choice(counts, p=odds / odds.sum()))
    pool = TRAIN_OBJECTS if split == "train" else ALL_OBJECTS
    objects = [HELD_OUT_OBJECTS[rng.integers(len(HELD_OUT_OBJECTS))]] if split == "test" else []
    while len(objects) < count:
        candidates = [o for o in pool if o.colour not in {p.colour for p in objects}]
        objects.append(candidates[rng.integers(len(candidates))])
    order = rng.permutation(count)
    background = ToyBackground(TEXTURES[rng.integers(len(TEXTURES))], COLOURS[rng.integers(len(COLOURS))],
                               DRIFTS[rng.integers(len(DRIFTS))])
    return ToyScene(tuple(objects[i] for i in order), background)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each sample has its own stream, so sample i is the same whatever else is generated."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


# ---------------------------------------------------------------------------------------------
# Rendering


def _object_path(obj: ToyObject, rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Where the object is, how big and at what angle, at the clip's start and end (linear in between;
    zoom grows geometrically)."""
    radius = float(rng.uniform(0.13, 0.18) * size)
    start_radius = end_radius = radius
    start_angle = end_angle = 0.0
    travel = np.zeros(2)
    if obj.motion in DIRECTION_VECTORS:
        travel = np.array(DIRECTION_VECTORS[obj.motion]) * rng.uniform(0.3, 0.4) * size
    elif obj.motion == "zoom":
        growth = math.sqrt(rng.uniform(2.0, 2.6))
        start_radius, end_radius = radius / growth, radius * growth
    else:
        end_angle = float(rng.uniform(60, 90) * rng.choice([-1, 1]))
    margin = max(start_radius, end_radius) + 1
    low = margin + np.maximum(-travel, 0)
    high = size - 1 - margin - np.maximum(travel, 0)
    start = rng.uniform(low, np.maximum(high, low))
    return {"start": start.tolist(), "end": (start + travel).tolist(), "radius": [start_radius, end_radius],
            "angle": [start_angle, end_angle]}


def _path_at(path: dict[str, Any], progress: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [T, 2], radii [T] and angles [T] at each progress value in 0..1."""
    start, end = np.array(path["start"]), np.array(path["end"])
    centres = start + progress[:, None] * (end - start)
    r0, r1 = path["radius"]
    radii = r0 * (r1 / r0) ** progress
    a0, a1 = path["angle"]
    return centres, radii, a0 + progress * (a1 - a0)


def _place_objects(objects: tuple[ToyObject, ...], rng: np.random.Generator, size: int,
                   frames: int) -> list[dict[str, Any]]:
    """Paths whose bounding circles never touch, if a few tries find such; else the least overlapping."""
    progress = np.linspace(0, 1, frames)
    best, best_gap = None, -np.inf
    for _ in range(PLACEMENT_TRIES):
        paths = [_object_path(o, rng, size) for o in objects]
        tracks = [_path_at(p, progress) for p in paths]
        gap = min((np.min(np.linalg.norm(a[0] - b[0], axis=1) - a[1] - b[1])
                   for i, a in enumerate(tracks) for b in tracks[i + 1:]), default=np.inf)
        if gap > best_gap:
            best, best_gap = paths, gap
        if gap >= 0:
            break
    return best


def _background_params(texture: str, rng: np.random.Generator, size: int) -> dict[str, Any]:
    unit = size / 64
    params: dict[str, Any] = {"period": float(rng.uniform(10, 16) * unit), "speed": float(rng.uniform(0.5, 1.0) * unit),
                              "offset": rng.uniform(0, 64 * unit, 2).tolist()}
    if texture == "waves":
        params |= {"amplitude": float(params["period"] * rng.uniform(0.15, 0.25)),
                   "wavelength": float(params["period"] * rng.uniform(2.0, 3.0))}
    elif texture == "clouds":
        count = 24
        angles = rng.uniform(0, 2 * np.pi, count)
        frequencies = 2 * np.pi / (rng.uniform(20, 36, count) * unit)
        params |= {"waves": np.stack([np.cos(angles) * frequencies, np.sin(angles) * frequencies,
                                      rng.uniform(0, 2 * np.pi, count)], axis=1).tolist()}
    return params


def texture_field(texture: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray, horizontal: bool) -> np.ndarray:
    """Signed distance-like field, in pixels, to the texture's edges: positive in the bright tone.

    Stripes and waves run across the drift (`horizontal`: drifting left or right), so that their
    motion is visible: stripes drifting along themselves would look still.
    """
    period = params["period"]
    wave = lambda u: np.sin(2 * np.pi * u / period) * period / (2 * np.pi)  # ~ distance near each zero crossing
    across, along = (x, y) if horizontal else (y, x)
    if texture == "stripes":
        return wave(across)
    if texture == "checks":
        sx, sy = wave(x), wave(y)
        return np.sign(sx * sy) * np.minimum(np.abs(sx), np.abs(sy))
    if texture == "dots":
        dx, dy = np.mod(x, period) - period / 2, np.mod(y, period) - period / 2
        return 0.3 * period - np.hypot(dx, dy)
    if texture == "waves":
        return wave(across + params["amplitude"] * np.sin(2 * np.pi * along / params["wavelength"]))
    if texture == "clouds":
        field_ = sum(np.cos(kx * x + ky * y + phase) for kx, ky, phase in params["waves"])
        return field_ * (2.0 / math.sqrt(len(params["waves"])))
    raise ValueError(f"unknown texture {texture!r}")


def render_background(background: ToyBackground, params: dict[str, Any], frames: int, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8: the muted two-tone texture, shifted by `speed` pixels a frame toward the drift."""
    vx, vy = DIRECTION_VECTORS[background.drift]
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    x = xs[None] - vx * params["speed"] * t + params["offset"][0]
    y = ys[None] - vy * params["speed"] * t + params["offset"][1]
    mix = np.clip(0.5 + texture_field(background.texture, params, x, y, horizontal=vx != 0), 0, 1)[..., None]
    hue = COLOUR_HUES[background.colour]
    base = hsv_colour(hue, BASE_SATURATION, BASE_VALUE)
    pattern = hsv_colour(hue, PATTERN_SATURATION, PATTERN_VALUE)
    return np.round(base + mix * (pattern - base)).astype(np.uint8)


def check_video_size(frames: int, size: int) -> None:
    """Motion needs two frames; H.264 needs even sizes; shapes need room to be told apart."""
    if frames < 2 or size < 16 or size % 2:
        raise ValueError(f"need at least 2 frames and an even size of at least 16, got {frames} frames, size {size}")


def render_scene(scene: ToyScene, rng: np.random.Generator, frames: int = 17, size: int = 64) -> ToyVideo:
    """Draw the scene: every layer and their composite."""
    check_video_size(frames, size)
    paths = _place_objects(scene.objects, rng, size, frames)
    bg_params = _background_params(scene.background.texture, rng, size)
    background = render_background(scene.background, bg_params, frames, size)
    k = len(scene.objects)
    alphas = np.zeros((k, frames, size, size), np.float32)
    foregrounds = np.zeros((k, frames, size, size, 3), np.uint8)
    progress = np.linspace(0, 1, frames)
    for i, (obj, path) in enumerate(zip(scene.objects, paths)):
        centres, radii, angles = _path_at(path, progress)
        for t in range(frames):
            alphas[i, t] = rasterize(shape_outline(obj.shape, radii[t], angles[t]), centres[t], size, size)
        foregrounds[i] = np.round(object_rgb(obj.colour)).astype(np.uint8)
    alphas = np.round(alphas * 255) / 255
    full = np.clip(np.round(composite(foregrounds.astype(np.float32), alphas, background)), 0, 255).astype(np.uint8)
    return ToyVideo(scene, full, background, foregrounds, alphas, {"objects": paths, "background": bg_params})


def make_video(seed: int, split: str, index: int, frames: int = 17, size: int = 64, max_objects: int = 3) -> ToyVideo:
    """Sample `index` of a split: the same arguments always give the same video."""
    rng = scene_rng(seed, split, index)
    return render_scene(sample_scene(rng, split, max_objects), rng, frames, size)


# ---------------------------------------------------------------------------------------------
# Shards


def toy_clip(video: ToyVideo, key: str, fps: float = DEFAULT_FPS) -> Clip:
    """The video as the write stage expects a finished clip."""
    frames, height, width = video.full.shape[:3]
    info = VideoInfo(width=width, height=height, fps=fps, num_frames=frames, duration_s=frames / fps,
                     codec="toy", backend="toy")
    return Clip(key=key, input_key=key, path="", source=f"toy/{video.scene.split}/{key}",
                captions=video.scene.captions(), info=info, span=(0.0, frames / fps), fps=fps, frames=video.full,
                source_frames=np.arange(frames), alphas=video.alphas, background=video.background,
                foregrounds=video.foregrounds)


def encode_sample(video: ToyVideo, key: str, fps: float = DEFAULT_FPS, config_hash: str = "",
                  params: WriteParams | None = None) -> dict[str, Any]:
    """One WebDataset sample as `vidlayer build` writes it, with the scene and its layout under json `toy`."""
    sample = Write(params or WriteParams()).process(toy_clip(video, key, fps)).sample
    toy = video.scene.to_json()
    for entry, path in zip(toy["objects"], video.layout["objects"]):
        entry.update(path)
    toy["background"].update(video.layout["background"])
    return stamp_sample({**sample, "json": {**sample["json"], "toy": toy}}, "toy", config_hash)


@dataclass
class ToyDataset:
    """What `write_toy_dataset` wrote."""

    folder: Path
    samples: dict[str, int]  # per split
    shards: dict[str, list[str]]  # per split, file names


def write_toy_dataset(out: str | Path, train: int, test: int, seed: int = 0, frames: int = 17, size: int = 64,
                      fps: float = DEFAULT_FPS, shard_size: int = 500, max_objects: int = 3,
                      progress: bool = True) -> ToyDataset:
    """Write OUT/train and OUT/test shards, each split's prompts (OUT/SPLIT/prompts.jsonl) and OUT/toy.json.

    The prompts files list every sample's captions and scene, for generating from the test prompts.
    Refuses a folder that already holds toy shards rather than mixing two datasets.
    """
    if train < 0 or test < 0 or train + test == 0:
        raise ValueError(f"need a positive number of samples, got {train} train and {test} test")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 1 <= max_objects <= max(FOREGROUND_COUNTS):
        raise ValueError(f"max_objects must be in 1..{max(FOREGROUND_COUNTS)}, got {max_objects}")
    check_video_size(frames, size)
    out = Path(out)
    counts = {"train": train, "test": test}
    for split in SPLITS:
        if any((out / split).glob("shard-*")):
            raise FileExistsError(f"{out / split} already holds shards; write the toy dataset to a new folder")
    settings = {"seed": seed, "frames": frames, "size": size, "fps": fps, "max_objects": max_objects,
                "vidlayer_version": vidlayer.__version__}
    config_hash = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    shards: dict[str, list[str]] = {}
    bar = Progress(TextColumn("toy samples"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("samples", total=train + test)
        for split in SPLITS:
            if counts[split]:
                shards[split] = _write_split(out / split, split, counts[split], seed, frames, size, fps, shard_size,
                                             max_objects, config_hash, lambda: bar.advance(task))
    (out / "toy.json").write_text(json.dumps({
        **settings, "config_hash": config_hash, "samples": counts, "shards": shards,
        "held_out": {"shape_colour": sorted(map(list, HELD_OUT_SHAPE_COLOUR)),
                     "colour_motion": sorted(map(list, HELD_OUT_COLOUR_MOTION))},
    }, indent=1))
    return ToyDataset(out, counts, shards)


@lru_cache(maxsize=None)
def _clean_background(texture: str, colour: str, drift: str, seed: int, frames: int, size: int) -> np.ndarray:
    background = ToyBackground(texture, colour, drift)
    params = _background_params(texture, np.random.default_rng(seed), size)
    video = render_background(background, params, frames, size)
    video.setflags(write=False)
    return video


def clean_backgrounds(texture: str, count: int, frames: int, size: int) -> list[np.ndarray]:
    """`count` fixed renders of one texture class in varied colours, drifts and periods (read-only, cached):
    the references that texture classification compares against."""
    rng = np.random.default_rng([TEXTURES.index(texture), size, frames])
    return [_clean_background(texture, COLOURS[rng.integers(len(COLOURS))], DRIFTS[rng.integers(len(DRIFTS))],
                              int(rng.integers(2**31)), frames, size) for _ in range(count)]



def _write_split(folder: Path, split: str, count: int, seed: int, frames: int, size: int, fps: float,
                 shard_size: int, max_objects: int, config_hash: str, advance: Callable[[], None]) -> list[str]:
    """Write one split's shards (each renamed from `.part` once complete) and prompts; return the shard names."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    sink = ShardSink(folder, 0, shard_size, max_bytes=2**63, on_commit=written.append)
    with open(folder / "prompts.jsonl", "w") as prompts:
        for index in range(count):
            video = make_video(seed, split, index, frames, size, max_objects)
            key = f"toy-{split}-{index:06d}"
            sink.write_group([encode_sample(video, key, fps, config_hash)])
            captions = video.scene.captions()
            prompts.write(json.dumps({"key": key, "full": captions.full, "background": captions.background,
                                      "foreground": captions.foreground, "toy": video.scene.to_json()}) + "\n")
            advance()
    sink.close()
    return written
