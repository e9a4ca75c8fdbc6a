"""Synthetic layered clips with exact ground truth, made from real photographs.

A clip is a photo backdrop seen through a moving camera, with photo cut-outs moving in front
of it. Everything a layered-video pipeline should recover is kept: the clean background, each
layer's straight colour and visible alpha, the captions and the camera motion. `full` is by
construction the over-composite of those layers, so a pipeline that recovers the layers
exactly reproduces the video exactly, and any error is the pipeline's own.

Hard clips (`hard=True`) stage what defeats flow-and-homography layering on real footage, so
that tuning on them transfers: a camera tracking its subject, a nearer background plane with
parallax, a near-static subject hiding background that no frame shows, and a late entrance.

The pictures are the samples shipped inside scikit-image, so nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vidlayer.io.video import decode_video, encode_video
from vidlayer.layers import composite

SHUTTER = 0.5  # fraction of the frame interval the virtual shutter is open (a 180 degree shutter)
BLUR_SAMPLES = 5  # sub-frame renders averaged into each frame's motion blur
FILL_STEP = 8  # the colour a layer has where its alpha is 0 is rendered this many times coarser
FOREGROUND_COUNTS, FOREGROUND_ODDS = (1, 2, 3), (0.6, 0.3, 0.1)
MAX_FOREGROUNDS = 4
OCCLUDER_CHANCE = 0.25
PLACEMENT_TRIES = 30
HARMONICS = np.array([2, 3, 5], dtype=np.float32)  # lobes of the outline's wobble
SPRITE_SIZES = (0.12, 0.30)  # side of a square with the sprite's area, as a fraction of the frame height
HARD_MODES = ("tracking", "parallax", "static", "late")  # hard clip i gets HARD_MODES[i % 4]
TRACKING_PARALLAX_CHANCE = 0.5  # a tracking clip also gets a near background plane
STATIC_SIZES = (0.30, 0.45)  # a near-static subject is large: much background is never seen
NEAR_PLANE_SPEEDUPS = (1.5, 3.0)  # a near plane's image motion over the far plane's


@dataclass
class Scene:
    """One clip and its ground-truth layers. Layer 0 is on top."""

    key: str
    fps: float
    full: np.ndarray  # [T, H, W, 3] uint8, the composite
    background: np.ndarray  # [T, H, W, 3] uint8, clean background as the moving camera sees it
    foregrounds: np.ndarray  # [K, T, H, W, 3] uint8, straight colour; the layer's texture where alpha is 0
    alphas: np.ndarray  # [K, T, H, W] float32, visible matte (after occlusion), in steps of 1/255
    captions: dict  # {"full": str, "foreground": [str] * K, "background": str}
    camera: np.ndarray  # [T, 3, 3] float64, homography from frame-0 pixels to frame-t pixels
    hard: str | None = None  # the hard mode the clip stages (one of HARD_MODES), None for a normal clip
    near_camera: np.ndarray | None = None  # [T, 3, 3] like `camera`, for the near background plane if any


@dataclass(frozen=True)
class Photo:
    """A region of a scikit-image sample picture; grey pictures get a tint so nothing is colourless."""

    source: str  # a loader in skimage.data, or "motorcycle" (the left stereo view)
    names: tuple[str, ...] = ()  # what a caption may call it
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # crop (x0, y0, x1, y1) as fractions
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain


@dataclass(frozen=True)
class StripKind:
    """A textured strip of background: a post in front of the foreground, or a bank of near ground."""

    name: str
    texture: Photo
    raggedness: float  # how much the strip's width wanders along it: 0 for a post, more for foliage


CUTOUTS = (
    Photo("chelsea", ("a cat's face", "a tabby cat"), box=(0.1, 0.0, 0.9, 1.0)),
    Photo("astronaut", ("an astronaut's face", "a smiling astronaut"), box=(0.28, 0.02, 0.62, 0.42)),
    Photo("astronaut", ("a space helmet",), box=(0.55, 0.66, 1.0, 1.0)),
    Photo("coffee", ("a coffee cup", "a cup of espresso"), box=(0.28, 0.03, 0.7, 0.55)),
    Photo("rocket", ("a rocket", "a white rocket"), box=(0.46, 0.29, 0.555, 0.97)),
    Photo("motorcycle", ("a red motorcycle", "a motorbike"), box=(0.14, 0.27, 0.93, 0.9)),
    Photo("retina", ("an orange retina scan",), box=(0.12, 0.1, 0.88, 0.9)),
    Photo("coins", ("a handful of gold coins",), box=(0.0, 0.27, 0.55, 0.62), tint=(1.05, 0.85, 0.45)),
    Photo("coins", ("a row of silver coins",), box=(0.0, 0.27, 0.55, 0.62), tint=(0.92, 0.95, 1.0)),
    Photo("camera", ("a man with a camera", "a photographer"), box=(0.0, 0.08, 0.66, 1.0), tint=(1.0, 0.88, 0.7)),
    Photo("immunohistochemistry", ("a stained cell cluster",), box=(0.5, 0.55, 0.82, 0.97)),
    Photo("colorwheel", ("a colour wheel", "a rainbow disc"), box=(0.15, 0.15, 0.85, 0.85)),
    Photo("hubble_deep_field", ("a patch of distant galaxies",), box=(0.2, 0.2, 0.6, 0.6)),
)

BACKDROPS = (
    Photo("brick", ("a red brick wall",), tint=(1.05, 0.6, 0.48)),
    Photo("brick", ("a pale brick wall", "a whitewashed brick wall"), tint=(1.0, 0.96, 0.88)),
    Photo("grass", ("a grassy lawn", "a patch of green grass"), tint=(0.6, 0.95, 0.45)),
    Photo("grass", ("dry autumn grass",), tint=(1.0, 0.82, 0.5)),
    Photo("gravel", ("a gravel path", "a bed of pebbles"), tint=(0.95, 0.9, 0.8)),
    Photo("page", ("a page of printed text",), tint=(1.0, 0.96, 0.85)),
    Photo("text", ("a sheet of handwritten notes",), tint=(0.95, 0.97, 1.0)),
    Photo("moon", ("the cratered surface of the moon",), tint=(1.0, 0.98, 0.95)),
    Photo("rocket", ("a rocket on its launch pad at dusk", "a launch pad at dusk")),
    Photo("hubble_deep_field", ("a starry night sky", "deep space full of galaxies")),
    Photo("motorcycle", ("a motorcycle in a garage", "a cluttered garage")),
    Photo("coffee", ("a cup of coffee on a wooden table",)),
    Photo("astronaut", ("a portrait of an astronaut",)),
    Photo("immunohistochemistry", ("stained tissue under a microscope",)),
    Photo("retina", ("a scan of a retina",), box=(0.15, 0.15, 0.85, 0.85)),
    Photo("chelsea", ("a close-up of a cat",)),
)

OCCLUDERS = (
    StripKind("a wooden post", Photo("gravel", tint=(0.72, 0.5, 0.33)), raggedness=0.0),
    StripKind("a stone pillar", Photo("gravel", tint=(0.62, 0.64, 0.68)), raggedness=0.0),
    StripKind("hanging vines", Photo("grass", tint=(0.45, 0.8, 0.3)), raggedness=0.45),
)

GROUNDS = (  # near background planes: bands across the bottom of the frame
    StripKind("a grassy bank", Photo("grass", tint=(0.5, 0.85, 0.35)), raggedness=0.15),
    StripKind("a gravel verge", Photo("gravel", tint=(0.85, 0.8, 0.7)), raggedness=0.08),
    StripKind("a low bank of dry grass", Photo("grass", tint=(0.95, 0.78, 0.45)), raggedness=0.2),
)

DIRECTIONS = ("to the right", "down and to the right", "downward", "down and to the left",
              "to the left", "up and to the left", "upward", "up and to the right")


# ---------------------------------------------------------------------------------------------
# Pictures


@lru_cache(maxsize=None)
def photo_pixels(photo: Photo) -> np.ndarray:
    """The photo's crop as tinted float32 RGB, cached: every clip draws from the same few pictures."""
    if photo.source == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, photo.source)()
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    height, width = image.shape[:2]
    x0, y0, x1, y1 = photo.box
    crop = image[round(y0 * height): round(y1 * height), round(x0 * width): round(x1 * width)]
    pixels = np.clip(crop * np.array(photo.tint, np.float32), 0, 255)
    pixels.setflags(write=False)
    return pixels


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average when shrinking (no aliasing), bilinear when enlarging (no ringing)."""
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def cover(photo: Photo, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The photo scaled to cover width x height (with some zoom to spare), cropped at a random spot."""
    pixels = photo_pixels(photo)
    scale = max(width / pixels.shape[1], height / pixels.shape[0]) * rng.uniform(1.0, 1.3)
    scaled = resize(pixels, math.ceil(pixels.shape[1] * scale), math.ceil(pixels.shape[0] * scale))
    x = rng.integers(scaled.shape[1] - width + 1)
    y = rng.integers(scaled.shape[0] - height + 1)
    return np.ascontiguousarray(scaled[y: y + height, x: x + width])


# ---------------------------------------------------------------------------------------------
# Geometry


def translation(offset) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = offset
    return matrix


def ease(u):
    """Smoothstep: a camera starts and stops gently rather than jerking into motion."""
    return u * u * (3 - 2 * u)


def bezier(points: np.ndarray, u):
    """Point(s) at time(s) u on the cubic Bezier curve with control points [4, 2]."""
    u = np.asarray(u, dtype=np.float64)[..., None]
    weights = ((1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u ** 2 * (1 - u), u ** 3)
    return sum(w * p for w, p in zip(weights, points))


@dataclass(frozen=True)
class CameraMove:
    """Where the camera goes over the whole clip; the frames in between follow an eased curve."""

    pan: tuple[float, float]  # travel of the view centre in frame-0 pixels (+x right, +y down)
    zoom: float  # magnification at the end; above 1 zooms in
    roll: float  # rotation at the end, radians

    def homographies(self, num_frames: int, width: int, height: int) -> np.ndarray:
        """[T, 3, 3]: frame-0 pixel coordinates to frame-t pixel coordinates."""
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        frames = []
        for progress in ease(np.linspace(0.0, 1.0, num_frames)):
            scale, angle = self.zoom ** progress, self.roll * progress
            cos, sin = scale * math.cos(angle), scale * math.sin(angle)
            rotate = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
            frames.append(translation(centre) @ rotate @ translation(-(centre + np.array(self.pan) * progress)))
        return np.stack(frames)


def still_camera(rng: np.random.Generator, width: int) -> CameraMove:
    """A camera on a tripod: it drifts a fraction of a percent."""
    return CameraMove(tuple(rng.normal(0, 0.003 * width, 2)), math.exp(rng.normal(0, 0.005)), 0.0)


def panning_camera(rng: np.random.Generator, width: int, travel: tuple[float, float], sideways_odds: float,
                   heading_spread: float) -> CameraMove:
    """A pan over `travel` (fractions of the width), sideways with `sideways_odds`, else a tilt.

    `heading_spread` (radians) lets it stray from level: a near plane would sweep up or down the frame.
    """
    sideways = rng.random() < sideways_odds
    heading = rng.choice([0.0, math.pi]) if sideways else rng.choice([-math.pi / 2, math.pi / 2])
    heading += rng.normal(0, heading_spread)
    distance = rng.uniform(*travel) * width
    return CameraMove((distance * math.cos(heading), distance * math.sin(heading)),
                      math.exp(rng.uniform(-0.04, 0.04)), rng.normal(0, 0.01))


def sample_camera(rng: np.random.Generator, width: int) -> CameraMove:
    """Nearly still, panning (mostly sideways, from gentle to strong) or zooming, with a little roll."""
    style = rng.choice(["still", "pan", "zoom"], p=[0.25, 0.5, 0.25])
    if style == "still":
        return still_camera(rng, width)
    if style == "pan":
        return panning_camera(rng, width, (0.04, 0.35), sideways_odds=0.75, heading_spread=0.2)
    zoom = math.exp(rng.choice([-1, 1]) * rng.uniform(0.12, 0.35))
    return CameraMove(tuple(rng.normal(0, 0.02 * width, 2)), zoom, rng.normal(0, 0.02))


def footprint(camera: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """Bounding box, in frame-0 pixels, of everything the camera sees during the clip."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64).T
    seen = np.linalg.inv(camera) @ corners  # [T, 3, 4]
    xs, ys = seen[:, 0] / seen[:, 2], seen[:, 1] / seen[:, 2]
    return xs.min(), ys.min(), xs.max(), ys.max()


def canvas_layout(camera: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """Origin (frame-0 pixel of canvas pixel 0, 0), width and height of a canvas covering the footprint."""
    x0, y0, x1, y1 = footprint(camera, width, height)
    origin = np.floor([x0, y0]) - 1
    return origin, math.ceil(x1 - origin[0]) + 2, math.ceil(y1 - origin[1]) + 2


# ---------------------------------------------------------------------------------------------
# Foreground sprites


@dataclass(frozen=True)
class Sprite:
    """A photo cut-out in a soft, wobbling superellipse that moves, turns and scales smoothly.

    Time `u` is 0 at the first frame and 1 at the last; lengths are frame pixels. The sprite's
    own coordinates put the cut-out on [-1, 1]^2, so its texture is glued to its shape.
    """

    name: str
    texture: np.ndarray  # [h, w, 3] float32, the cut-out at about its largest on-screen size
    path: np.ndarray  # [4, 2] Bezier control points of the centre
    half_heights: tuple[float, float]  # at u = 0 and u = 1, changing geometrically between
    aspect: float  # width / height
    angles: tuple[float, float]  # rotation at u = 0 and u = 1, radians
    squareness: float  # superellipse exponent: 2 is an ellipse, larger tends to a rounded box
    wobble: np.ndarray  # [3, len(HARMONICS)] amplitude, phase and speed (radians per unit u) per harmonic
    feather: float  # width of the soft edge, pixels
    leaves_frame: bool
    enters_from: str | None = None  # the edge ("left", "top", ...) it enters by, when out of frame at first
    bob: tuple[float, float] = (0.0, 0.0)  # a gait's rise in pixels and its steps per unit u

    def pose(self, u):
        """Centre, half height and angle at time(s) u."""
        (h0, h1), (a0, a1) = self.half_heights, self.angles
        rise, steps = self.bob
        centre = bezier(self.path, u) - np.multiply.outer(rise * np.abs(np.sin(math.pi * steps * np.asarray(u))),
                                                           [0.0, 1.0])
        return centre, h0 * (h1 / h0) ** u, a0 + (a1 - a0) * u

    def reach(self, half_height) -> float:
        """How far from its centre, in pixels, the sprite's matte can extend at this half height."""
        superellipse_corner = math.sqrt(2)
        return (half_height * max(self.aspect, 1.0) * superellipse_corner * (1 + self.wobble[0].sum())
                + self.feather + 1)

    def frame_to_local(self, u: float) -> np.ndarray:
        """3x3 map from frame pixels to the sprite's own coordinates."""
        centre, half_height, angle = self.pose(u)
        cos, sin = math.cos(angle), math.sin(angle)
        unrotate = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
        return np.diag([1 / (half_height * self.aspect), 1 / half_height, 1.0]) @ unrotate @ translation(-centre)

    def alpha(self, u: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Coverage of the pixels at (xs, ys): a linear ramp `feather` pixels wide across the outline."""
        m = self.frame_to_local(u).astype(np.float32)
        x, y = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        radius, phi = np.hypot(x, y), np.arctan2(y, x)
        cos, sin = np.cos(phi), np.sin(phi)
        outline = (np.abs(cos) ** self.squareness + np.abs(sin) ** self.squareness) ** (-1 / self.squareness)
        amplitude, phase, speed = self.wobble
        offsets = (phase + speed * u).astype(np.float32)
        outline *= 1 + sum(a * np.sin(k * phi + o) for k, a, o in zip(HARMONICS, amplitude, offsets))
        # Pixels per unit of sprite radius along this ray, so the ramp has the same width on screen everywhere.
        pixels_per_unit = float(self.pose(u)[1]) * np.hypot(self.aspect * cos, sin)
        return np.clip((outline - radius) * pixels_per_unit / self.feather + 0.5, 0, 1)

    def colour(self, u: float, x0: int, y0: int, width: int, height: int, step: int = 1) -> np.ndarray:
        """[height, width, 3] texture seen through a window of the frame; mirrored beyond the cut-out.

        The window starts at frame pixel (x0, y0) and each of its pixels spans `step` frame pixels.
        """
        tex_h, tex_w = self.texture.shape[:2]
        local_to_texture = np.array([[tex_w / 2, 0, tex_w / 2 - 0.5], [0, tex_h / 2, tex_h / 2 - 0.5], [0, 0, 1]])
        window_to_frame = translation((x0 + (step - 1) / 2, y0 + (step - 1) / 2)) @ np.diag([step, step, 1.0])
        window_to_texture = local_to_texture @ self.frame_to_local(u) @ window_to_frame
        return cv2.warpAffine(self.texture, window_to_texture[:2], (width, height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)

    def fill(self, width: int, height: int) -> np.ndarray:
        """[H, W, 3] colour for where the sprite is absent: its own texture, coarse and still.

        That colour is never seen (alpha is 0 there), so it only has to be plausible; being smooth
        and the same in every frame, it costs almost nothing to store losslessly.
        """
        coarse = self.colour(0.5, 0, 0, -(-width // FILL_STEP), -(-height // FILL_STEP), step=FILL_STEP)
        return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)

    def bounds(self, times: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), clipped to the frame, holding the sprite at all `times`."""
        centres, half_heights, _ = self.pose(times)
        reach = self.reach(half_heights.max())
        x0, y0 = np.floor(centres.min(axis=0) - reach).astype(int)
        x1, y1 = np.ceil(centres.max(axis=0) + reach).astype(int) + 1
        return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)

    def equivalent_radius(self, u) -> np.ndarray:
        """Radius of the circle with about the sprite's area, for spacing sprites apart."""
        return self.pose(u)[1] * math.sqrt(self.aspect)


def soft_edge(rng: np.random.Generator, height: int) -> float:
    """An anti-aliased edge a few pixels wide at 480p, narrower on tiny frames."""
    return rng.uniform(1.2, 3.0) * float(np.clip(height / 480, 0.5, 2.0))


def distance_to_border(point: np.ndarray, direction: np.ndarray, width: int, height: int) -> float:
    """How far from `point`, inside the frame, along the unit `direction` the frame's border is."""
    border = np.where(direction > 0, [width, height], 0.0)
    moving = direction != 0
    return float(np.min((border[moving] - point[moving]) / direction[moving]))


def sample_path(rng: np.random.Generator, width: int, height: int, half_extent: float) -> tuple[np.ndarray, bool]:
    """Bezier control points from a start in the frame to an end, sometimes past an edge; and whether it leaves.

    `half_extent` is the sprite's smallest half size at the end: overshooting the border by less
    than that keeps part of it in view.
    """
    start = rng.uniform([0.15 * width, 0.2 * height], [0.85 * width, 0.8 * height])
    heading = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    leaves = bool(rng.random() < 0.25)
    if leaves:
        # Stop with the centre near the border the sprite is heading for: part of it is out of frame.
        to_border = distance_to_border(start, direction, width, height)
        end = start + direction * (to_border + rng.uniform(-0.2, 0.6) * half_extent)
    else:
        end = np.clip(start + direction * rng.uniform(0.03, 0.5) * width, [0.1 * width, 0.12 * height],
                      [0.9 * width, 0.88 * height])
    normal = np.array([-direction[1], direction[0]])
    bends = rng.uniform(-0.12, 0.12, 2) * height
    thirds = start + np.outer([1 / 3, 2 / 3], end - start) + np.outer(bends, normal)
    path = np.stack([start, *thirds, end])
    return path, leaves


def sample_sprite(rng: np.random.Generator, photo: Photo, width: int, height: int, seconds: float,
                  sizes: tuple[float, float] = SPRITE_SIZES) -> Sprite:
    """A salient cut-out (`sizes` of the frame height across) with its own motion and wobble."""
    pixels = photo_pixels(photo)
    aspect = pixels.shape[1] / pixels.shape[0] * rng.uniform(0.85, 1.15)
    size = rng.uniform(*sizes) * height  # side of a square with the sprite's area
    half_height = min(size / (2 * math.sqrt(aspect)), 0.3 * height)
    half_heights = (half_height, half_height * math.exp(rng.uniform(-0.35, 0.35)))
    path, leaves = sample_path(rng, width, height, half_heights[1] * min(aspect, 1.0))
    angle = rng.uniform(-0.4, 0.4)
    spin = rng.choice([-1, 1]) * rng.uniform(1.0, 3.0) if rng.random() < 0.2 else rng.normal(0, 0.3)
    amplitude = rng.uniform(0, [0.12, 0.08, 0.04])
    phase = rng.uniform(0, 2 * math.pi, 3)
    speed = rng.choice([-1, 1], 3) * rng.uniform(1.5, 5.0, 3) * seconds  # radians per second, per unit u
    wobble = np.stack([amplitude, phase, speed]).astype(np.float32)
    tex_h = max(2, round(2 * max(half_heights)))
    return Sprite(name=str(rng.choice(photo.names)), texture=resize(pixels, max(2, round(tex_h * aspect)), tex_h),
                  path=path, half_heights=half_heights, aspect=aspect, angles=(angle, angle + spin),
                  squareness=rng.uniform(2.0, 5.0), wobble=wobble, feather=soft_edge(rng, height), leaves_frame=leaves)


def pick_cutouts(rng: np.random.Generator, count: int, backdrop: Photo) -> list[Photo]:
    """`count` cut-outs from distinct pictures, none from the backdrop's (no cat's face on a cat)."""
    chosen, used = [], {backdrop.source}
    for i in rng.permutation(len(CUTOUTS)):
        if len(chosen) < count and CUTOUTS[i].source not in used:
            chosen.append(CUTOUTS[i])
            used.add(CUTOUTS[i].source)
    return chosen


def clearance(sprites: list[Sprite]) -> float:
    """Smallest gap in pixels between any two sprites over the clip (negative when they overlap)."""
    times = np.linspace(0, 1, 17)
    gaps = [np.min(np.linalg.norm(a.pose(times)[0] - b.pose(times)[0], axis=1)
                   - a.equivalent_radius(times) - b.equivalent_radius(times))
            for i, a in enumerate(sprites) for b in sprites[i + 1:]]
    return min(gaps, default=math.inf)


def track(rng: np.random.Generator, sprite: Sprite, width: int, height: int, seconds: float) -> Sprite:
    """Hold the sprite near its start on screen, bobbing as if walking: the camera follows it."""
    start = sprite.path[0]
    drift = rng.uniform(-0.025, 0.025, 2) * width
    rise, steps_per_second = rng.uniform(0.01, 0.03) * height, rng.uniform(1.5, 3.0)
    return replace(sprite, path=start + np.outer(np.linspace(0, 1, 4), drift), leaves_frame=False,
                   bob=(rise, steps_per_second * seconds))


def hold_still(rng: np.random.Generator, sprite: Sprite, width: int, height: int, seconds: float) -> Sprite:
    """Keep the sprite nearly fixed in frame, barely turning, scaling or wobbling."""
    start, heading = sprite.path[0], rng.uniform(0, 2 * math.pi)
    drift = rng.uniform(0, 0.008) * width * np.array([math.cos(heading), math.sin(heading)])
    half_height, angle = sprite.half_heights[0], sprite.angles[0]
    calm = sprite.wobble.copy()
    calm[0] *= 0.3
    return replace(sprite, path=start + np.outer(np.linspace(0, 1, 4), drift), leaves_frame=False,
                   half_heights=(half_height, half_height * math.exp(rng.uniform(-0.03, 0.03))),
                   angles=(angle, angle + rng.normal(0, 0.02)), wobble=calm)


EDGES = {"left": (0, 0), "right": (0, 1), "top": (1, 0), "bottom": (1, 1)}  # axis, and whether the far side


def enter_late(rng: np.random.Generator, sprite: Sprite, width: int, height: int, seconds: float) -> Sprite:
    """Start the sprite out of frame past an edge, entering after 30-60% of the clip to stop inside.

    The centre eases along a straight line (a Bezier with doubled end points is smoothstep), so
    the moment its outline first touches the frame can be placed exactly.
    """
    size = np.array([width, height], dtype=np.float64)
    end = rng.uniform([0.2, 0.25], [0.8, 0.75]) * size
    edge = str(rng.choice(list(EDGES), p=[0.4, 0.4, 0.1, 0.1]))
    axis, far_side = EDGES[edge]
    reach = sprite.reach(max(sprite.half_heights))
    touch = end.copy()  # where the centre is when the outline first touches the frame
    touch[axis] = size[axis] + reach if far_side else -reach
    touch[1 - axis] = np.clip(end[1 - axis] + rng.normal(0, 0.15) * size[1 - axis], 0.1 * size[1 - axis],
                              0.9 * size[1 - axis])
    reached = ease(rng.uniform(0.3, 0.6))  # share of the way travelled when it touches
    start = (touch - reached * end) / (1 - reached)
    return replace(sprite, path=np.stack([start, start, end, end]), leaves_frame=False, enters_from=edge)


STAGINGS = {"tracking": track, "static": hold_still, "late": enter_late}  # hard modes that move the sprites


def place_sprites(rng: np.random.Generator, photos: list[Photo], width: int, height: int, seconds: float,
                  mode: str | None = None) -> list[Sprite]:
    """Sprites that keep apart: draw several layouts and keep the first clear one (else the clearest).

    A hard `mode` restages each sprite as drawn (and a static subject is drawn larger).
    """
    sizes = STATIC_SIZES if mode == "static" else SPRITE_SIZES
    restage = STAGINGS.get(mode)
    best, best_gap = [], -math.inf
    for _ in range(PLACEMENT_TRIES):
        sprites = [sample_sprite(rng, photo, width, height, seconds, sizes) for photo in photos]
        if restage is not None:
            sprites = [restage(rng, sprite, width, height, seconds) for sprite in sprites]
        gap = clearance(sprites)
        if gap > best_gap:
            best, best_gap = sprites, gap
        if gap >= 0:
            break
    return best


def expose(sprite: Sprite, fill: np.ndarray, u: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Alpha [H, W] and straight colour [H, W, 3] of a sprite over one frame's exposure.

    Motion blur averages premultiplied colour and alpha over sub-frame renders, which is exactly
    what a blurred layer over-composites to, so `full` stays the composite of the layers.
    Where the sprite never reaches, the colour is `fill`.
    """
    height, width = fill.shape[:2]
    colour = fill.copy()
    alpha = np.zeros((height, width), np.float32)
    times = u + spread * ((np.arange(BLUR_SAMPLES) + 0.5) / BLUR_SAMPLES - 0.5)
    x0, y0, x1, y1 = sprite.bounds(times, width, height)
    if x0 >= x1 or y0 >= y1:
        return alpha, colour
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    coverage = np.zeros(xs.shape, np.float32)
    premultiplied = np.zeros((*xs.shape, 3), np.float32)
    for t in times:
        sample = sprite.alpha(t, xs, ys)
        coverage += sample
        premultiplied += sample[..., None] * sprite.colour(t, x0, y0, x1 - x0, y1 - y0)
    alpha[y0:y1, x0:x1] = coverage / BLUR_SAMPLES
    covered = coverage > 0
    colour[y0:y1, x0:x1][covered] = premultiplied[covered] / coverage[covered][:, None]
    return alpha, colour


# ---------------------------------------------------------------------------------------------
# Background


def backdrop_canvas(rng: np.random.Generator, photo: Photo, camera: np.ndarray, width: int,
                    height: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo laid out in frame-0 pixels over all the camera will see; returns it and its origin."""
    origin, canvas_width, canvas_height = canvas_layout(camera, width, height)
    return cover(photo, canvas_width, canvas_height, rng), origin


def add_occluder(rng: np.random.Generator, kind: StripKind, canvas: np.ndarray, origin: np.ndarray,
                 sprite: Sprite, camera: np.ndarray, feather: float,
                 moments: tuple[float, float] = (0.3, 0.7)) -> np.ndarray:
    """Paint a near-vertical strip into the canvas where `sprite` passes behind it; return its matte.

    The strip is part of the background (it moves with the camera) yet in front of the sprite,
    so it cuts into the sprite's visible matte: a partial occlusion the pipeline must handle.
    It stands where the sprite is at a moment drawn from `moments` (fractions of the clip).
    """
    frame = round(rng.uniform(*moments) * (len(camera) - 1))
    centre, half_height, _ = sprite.pose(frame / (len(camera) - 1))
    half_width = half_height * sprite.aspect
    x, y, w = np.linalg.inv(camera[frame]) @ [*centre, 1.0]
    x, y = x / w - origin[0] + rng.uniform(-0.6, 0.6) * half_width, y / w - origin[1]
    strip = max(1.5, rng.uniform(0.2, 0.45) * half_width)  # half width of the strip
    return paint_strip(rng, kind, canvas, (x, y), strip, rng.normal(0, 0.08), feather)


def paint_strip(rng: np.random.Generator, kind: StripKind, canvas: np.ndarray, centre: tuple[float, float],
                strip: float, tilt: float, feather: float) -> np.ndarray:
    """Paint a strip `strip` pixels either side of a line through `centre` into the canvas; return its matte.

    `tilt` turns the line from vertical (a post) towards horizontal (a bank of ground at pi / 2);
    the strip is shaded like a lit cylinder so it reads as a solid object, not a stripe.
    """
    x, y = centre
    ys, xs = np.mgrid[: canvas.shape[0], : canvas.shape[1]].astype(np.float32)
    across = (xs - x) * math.cos(tilt) - (ys - y) * math.sin(tilt)
    along = (xs - x) * math.sin(tilt) + (ys - y) * math.cos(tilt)
    phases = rng.uniform(0, 2 * math.pi, 2)
    reach = strip * (1 + kind.raggedness * (0.6 * np.sin(along / (0.8 * strip) + phases[0])
                                            + 0.4 * np.sin(along / (0.3 * strip) + phases[1])))
    matte = np.clip((reach - np.abs(across)) / feather + 0.5, 0, 1)
    shade = 0.55 + 0.45 * np.sqrt(np.clip(1 - (across / reach) ** 2, 0, 1))
    texture = cover(kind.texture, canvas.shape[1], canvas.shape[0], rng)
    canvas += matte[..., None] * (texture * shade[..., None] - canvas)
    return matte


@dataclass
class NearPlane:
    """Background nearer than the backdrop: as the camera pans it slides further, so it has its own camera."""

    premultiplied: np.ndarray  # [h, w, 4] float32: colour times coverage, then coverage (one warp per frame)
    origin: np.ndarray  # frame-0 pixel (of this plane's camera) of canvas pixel (0, 0)
    camera: np.ndarray  # [T, 3, 3] from this plane's frame-0 pixels to frame-t pixels


def ground_plane(rng: np.random.Generator, kind: StripKind, move: CameraMove, num_frames: int, width: int,
                 height: int, feather: float) -> NearPlane:
    """A band of `kind` across the bottom of the frame, moving 1.5-3x as far as the backdrop as the camera pans.

    A plane at 1/k of the backdrop's depth moves k times as far in the image under a camera
    translation, while zoom and roll act on both alike: the same move with k times the pan.
    """
    speedup = rng.uniform(*NEAR_PLANE_SPEEDUPS)
    nearer = replace(move, pan=(speedup * move.pan[0], speedup * move.pan[1]))
    camera = nearer.homographies(num_frames, width, height)
    origin, canvas_width, canvas_height = canvas_layout(camera, width, height)
    colour = np.zeros((canvas_height, canvas_width, 3), np.float32)
    band_top = rng.uniform(0.6, 0.8) * height - origin[1]
    bottom = canvas_height - 1
    matte = paint_strip(rng, kind, colour, (0.0, bottom), bottom - band_top, math.pi / 2, feather)
    return NearPlane(premultiplied=np.dstack([colour, matte]), origin=origin, camera=camera)


# ---------------------------------------------------------------------------------------------
# Captions


def join_and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_motion(rng: np.random.Generator, sprite: Sprite, width: int,
                    camera_pan: tuple[float, float] = (0.0, 0.0)) -> str:
    """E.g. "a coffee cup drifting slowly to the left while growing".

    `camera_pan` is that of a camera following the sprite: the sprite's motion in the world,
    which the caption tells, is then its motion on screen plus the pan.
    """
    shift = sprite.path[3] - sprite.path[0] + camera_pan
    travel = np.hypot(*shift) / width
    if sprite.enters_from:
        motion = f"entering from the {sprite.enters_from} partway through"
    elif travel < 0.06:
        motion = str(rng.choice(["hovering in place", "wobbling in place", "bobbing gently"]))
    else:
        verb = rng.choice(["moving", "drifting", "sliding", "gliding"])
        pace = "slowly " if travel < 0.2 else "quickly " if travel > 0.45 else ""
        heading = DIRECTIONS[round(math.atan2(shift[1], shift[0]) / (math.pi / 4)) % 8]
        motion = f"{verb} {pace}{heading}" + (" until partly out of frame" if sprite.leaves_frame else "")
    growth = sprite.half_heights[1] / sprite.half_heights[0]
    changes = ["growing"] if growth > 1.25 else ["shrinking"] if growth < 0.8 else []
    if abs(sprite.angles[1] - sprite.angles[0]) > 1.0:
        changes.append("spinning")
    if sprite.bob[0] > 0:
        changes.append("bobbing up and down")
    return f"{sprite.name} {motion}" + (" while " + " and ".join(changes) if changes else "")


def describe_camera(rng: np.random.Generator, move: CameraMove, width: int, subject: str | None = None) -> str:
    """E.g. "the camera slowly panning right and zooming in", or "the camera following a rocket, ..."."""
    moves = []
    travel = math.hypot(*move.pan) / width
    if travel > 0.03:
        pan_x, pan_y = move.pan
        if abs(pan_x) >= abs(pan_y):
            moves.append("panning right" if pan_x > 0 else "panning left")
        else:
            moves.append("tilting down" if pan_y > 0 else "tilting up")
        moves[0] = ("slowly " if travel < 0.12 else "quickly " if travel > 0.25 else "") + moves[0]
    if abs(math.log(move.zoom)) > 0.08:
        moves.append("zooming in" if move.zoom > 1 else "zooming out")
    if not moves:
        return str(rng.choice(["the camera holding still", "the camera static", "the camera barely moving"]))
    return "the camera " + (f"following {subject}, " if subject else "") + " and ".join(moves)


def write_captions(rng: np.random.Generator, backdrop: Photo, sprites: list[Sprite], occluder: StripKind | None,
                   move: CameraMove, width: int, ground: StripKind | None = None, tracking: bool = False) -> dict:
    """Captions for the whole clip, each foreground layer and the background.

    `ground` is a near background plane; `tracking` says the camera follows the sprites.
    """
    camera_pan = move.pan if tracking else (0.0, 0.0)
    foreground = [describe_motion(rng, sprite, width, camera_pan) for sprite in sprites]
    setting = (str(rng.choice(backdrop.names)) + (f" seen across {ground.name}" if ground else "")
               + (f" with {occluder.name} in the foreground" if occluder else ""))
    camera = describe_camera(rng, move, width, sprites[0].name if tracking and sprites else None)
    background = f"{setting}, {camera}"
    if not sprites:
        return {"full": background, "foreground": [], "background": background}
    preposition = rng.choice(["in front of", "against", "over"])
    return {"full": f"{join_and(foreground)} {preposition} {setting}, {camera}", "foreground": foreground,
            "background": background}


# ---------------------------------------------------------------------------------------------
# Scenes


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def quantise_alpha(alpha: np.ndarray) -> np.ndarray:
    """Alpha in steps of 1/255, so a matte stored as grey video reads back identical."""
    return np.rint(alpha * 255).astype(np.float32) / 255


def clip_length(width: int, height: int, fps: float, seconds: float) -> int:
    """Number of frames, after checking that the size and duration make an encodable clip."""
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even (for H.264) and at least 32, got {width}x{height}")
    if not fps > 0 or not seconds > 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps} seconds={seconds}")
    num_frames = round(seconds * fps)
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, but {seconds} s at {fps} fps gives {num_frames}")
    return num_frames


def view(image: np.ndarray, canvas_to_frame: np.ndarray, width: int, height: int,
         border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """A canvas as one frame sees it."""
    return cv2.warpPerspective(image, canvas_to_frame, (width, height), flags=cv2.INTER_LINEAR, borderMode=border)


def render_layers(sprites: list[Sprite], canvas: np.ndarray, origin: np.ndarray, occluder_matte: np.ndarray | None,
                  camera: np.ndarray, width: int, height: int,
                  near: NearPlane | None = None) -> tuple[np.ndarray, ...]:
    """Frame by frame: the background through the camera (the near plane over it), blurred sprites,
    visible mattes, composite."""
    num_frames = len(camera)
    full = np.empty((num_frames, height, width, 3), np.uint8)
    background = np.empty_like(full)
    foregrounds = np.empty((len(sprites), *full.shape), np.uint8)
    alphas = np.empty((len(sprites), num_frames, height, width), np.float32)
    spread = SHUTTER / (num_frames - 1)  # the shutter interval in units of u
    fills = [sprite.fill(width, height) for sprite in sprites]
    for t in range(num_frames):
        canvas_to_frame = camera[t] @ translation(origin)
        scenery = view(canvas, canvas_to_frame, width, height, cv2.BORDER_REFLECT)
        if near is not None:
            near_view = view(near.premultiplied, near.camera[t] @ translation(near.origin), width, height)
            scenery = near_view[..., :3] + (1 - near_view[..., 3:]) * scenery
        background[t] = to_uint8(scenery)
        # The share of each pixel not yet hidden by something nearer: the occluder, then the sprites in turn.
        uncovered = np.ones((height, width), np.float32)
        if occluder_matte is not None:
            uncovered -= view(occluder_matte, canvas_to_frame, width, height)
        for k, sprite in enumerate(sprites):
            alpha, colour = expose(sprite, fills[k], t / (num_frames - 1), spread)
            alphas[k, t] = quantise_alpha(alpha * uncovered)
            foregrounds[k, t] = to_uint8(colour)
            uncovered *= 1 - alpha
        full[t] = to_uint8(composite(foregrounds[:, t], alphas[:, t], background[t]))
    return full, background, foregrounds, alphas


def hard_camera(rng: np.random.Generator, mode: str, move: CameraMove, width: int) -> CameraMove:
    """The camera a hard mode needs: a fast pan to track, a pan to show parallax, a tripod for a static subject."""
    if mode == "tracking":
        return panning_camera(rng, width, (0.5, 1.0), sideways_odds=1.0, heading_spread=0.02)
    if mode == "parallax":
        return panning_camera(rng, width, (0.15, 0.35), sideways_odds=1.0, heading_spread=0.02)
    if mode == "static":
        return still_camera(rng, width)
    return move


def render_scene(seed: int, index: int = 0, *, width: int = 854, height: int = 480, fps: float = 24.0,
                 seconds: float = 4.0, num_foregrounds: int | None = None, hard: bool = False) -> Scene:
    """Render clip `index` of the set made with `seed`; the same arguments give bit-identical arrays.

    `num_foregrounds` fixes the number of layers; by default it is mostly 1, sometimes 2, rarely 3.
    `hard` stages HARD_MODES[index % 4] on the clip that is otherwise drawn as the normal one
    (same backdrop and cut-outs), keyed synth-hard-SEED-INDEX.
    """
    num_frames = clip_length(width, height, fps, seconds)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed} index={index}")
    if num_foregrounds is not None and not 0 <= num_foregrounds <= MAX_FOREGROUNDS:
        raise ValueError(f"num_foregrounds must be between 0 and {MAX_FOREGROUNDS}, got {num_foregrounds}")
    mode = HARD_MODES[index % len(HARD_MODES)] if hard else None
    rng = np.random.default_rng([seed, index])
    # Drawn even when the count is fixed, so fixing it keeps the clip's backdrop, pictures and camera.
    drawn = int(rng.choice(FOREGROUND_COUNTS, p=FOREGROUND_ODDS))
    backdrop = BACKDROPS[rng.integers(len(BACKDROPS))]
    photos = pick_cutouts(rng, drawn if num_foregrounds is None else num_foregrounds, backdrop)
    move = sample_camera(rng, width)
    if mode:
        move = hard_camera(rng, mode, move, width)
    camera = move.homographies(num_frames, width, height)
    sprites = place_sprites(rng, photos, width, height, (num_frames - 1) / fps, mode)
    canvas, origin = backdrop_canvas(rng, backdrop, camera, width, height)
    ground, near = None, None
    if mode == "parallax" or (mode == "tracking" and rng.random() < TRACKING_PARALLAX_CHANCE):
        grounds = [kind for kind in GROUNDS if kind.texture.source != backdrop.source]
        ground = grounds[rng.integers(len(grounds))]
        near = ground_plane(rng, ground, move, num_frames, width, height, soft_edge(rng, height))
    occluder, occluder_matte = None, None
    if sprites and rng.random() < OCCLUDER_CHANCE:
        occluder = OCCLUDERS[rng.integers(len(OCCLUDERS))]
        # A late sprite is in frame only near the end: the strip stands where it is seen.
        moments = (0.8, 1.0) if mode == "late" else (0.3, 0.7)
        occluder_matte = add_occluder(rng, occluder, canvas, origin, sprites[0], camera, soft_edge(rng, height),
                                      moments)
    captions = write_captions(rng, backdrop, sprites, occluder, move, width, ground, tracking=mode == "tracking")
    full, background, foregrounds, alphas = render_layers(sprites, canvas, origin, occluder_matte, camera,
                                                          width, height, near)
    return Scene(key=f"synth-{'hard-' if hard else ''}{seed:04d}-{index:04d}", fps=fps, full=full,
                 background=background, foregrounds=foregrounds, alphas=alphas, captions=captions, camera=camera,
                 hard=mode, near_camera=None if near is None else near.camera)


# ---------------------------------------------------------------------------------------------
# Files


def write_atomically(path: Path, data: bytes) -> None:
    """Write under a hidden temporary name, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def save_ground_truth(scene: Scene, folder: str | Path) -> None:
    """Write the layers losslessly into `folder`, which appears only once complete."""
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    videos = {"full": scene.full, "background": scene.background}
    for k in range(len(scene.alphas)):
        videos[f"fg{k}"] = scene.foregrounds[k]
        videos[f"alpha{k}"] = to_uint8(scene.alphas[k] * 255)
    for name, frames in videos.items():
        (temporary / f"{name}.mp4").write_bytes(encode_video(frames, scene.fps, lossless=True))
    num_frames, height, width = scene.full.shape[:3]
    layers = {"key": scene.key, "fps": scene.fps, "width": width, "height": height, "num_frames": num_frames,
              "num_foregrounds": len(scene.alphas), "captions": scene.captions, "camera": scene.camera.tolist()}
    if scene.hard:
        layers["hard"] = scene.hard
    if scene.near_camera is not None:
        layers["near_camera"] = scene.near_camera.tolist()
    (temporary / "layers.json").write_text(json.dumps(layers, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(temporary, folder)


def load_ground_truth(folder: str | Path) -> Scene:
    """Read back what `save_ground_truth` wrote (alphas exact to 1/255, colour exact)."""
    folder = Path(folder)
    layers = json.loads((folder / "layers.json").read_text())
    full = decode_video(folder / "full.mp4")
    count = layers["num_foregrounds"]
    foregrounds = np.stack([decode_video(folder / f"fg{k}.mp4") for k in range(count)]) if count \
        else np.empty((0, *full.shape), np.uint8)
    alphas = np.stack([decode_video(folder / f"alpha{k}.mp4", grey=True) for k in range(count)]) if count \
        else np.empty((0, *full.shape[:3]), np.uint8)
    return Scene(key=layers["key"], fps=layers["fps"], full=full, background=decode_video(folder / "background.mp4"),
                 foregrounds=foregrounds, alphas=alphas.astype(np.float32) / 255, captions=layers["captions"],
                 camera=np.array(layers["camera"], dtype=np.float64), hard=layers.get("hard"),
                 near_camera=np.array(layers["near_camera"], dtype=np.float64) if "near_camera" in layers
                 else None)


def save_raw(scene: Scene, folder: Path, caption_format: str) -> None:
    """The clip as a user would supply it: lossy mp4 plus a caption sidecar ("json" with layer captions, or "txt").

    The video is written last, so a clip without its caption is never discovered.
    """
    if caption_format == "json":
        sidecar = json.dumps({"caption": scene.captions["full"], "fg_caption": scene.captions["foreground"],
                              "bg_caption": scene.captions["background"]}, indent=1)
    else:
        sidecar = scene.captions["full"] + "\n"
    write_atomically(folder / f"{scene.key}.{caption_format}", sidecar.encode())
    write_atomically(folder / f"{scene.key}.mp4", encode_video(scene.full, scene.fps, crf=20))


def synthesize(out_dir: str | Path, n: int, seed: int = 0, *, width: int = 854, height: int = 480, fps: float = 24.0,
               seconds: float = 4.0, progress: bool = True, hard: bool = False) -> list[str]:
    """Write `n` clips to OUT/raw (mp4 + captions) and their true layers to OUT/gt/KEY; return the keys.

    Even clips get a json sidecar with layer captions, odd ones only a txt caption, so both input
    forms (given and derived layer captions) are exercised. `hard` makes hard clips (see `render_scene`).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    clip_length(width, height, fps, seconds)
    out_dir = Path(out_dir)
    raw, ground_truth = out_dir / "raw", out_dir / "gt"
    raw.mkdir(parents=True, exist_ok=True)
    ground_truth.mkdir(parents=True, exist_ok=True)
    keys = []
    bar = Progress(TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("clips", total=n)
        for index in range(n):
            scene = render_scene(seed, index, width=width, height=height, fps=fps, seconds=seconds, hard=hard)
            save_ground_truth(scene, ground_truth / scene.key)
            save_raw(scene, raw, "json" if index % 2 == 0 else "txt")
            keys.append(scene.key)
            bar.advance(task)
    return keys
