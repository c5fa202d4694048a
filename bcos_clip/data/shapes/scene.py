"""The shapes world, scene side: objects, textured backgrounds, placement and rendering.

Scenes hold 1-4 coloured shapes (circle, square, triangle, star in red, green, blue, yellow) at varying
sizes and positions on low-contrast textured backgrounds (smooth noise or stripes). Captions name colour
and shape, and, for the structured evaluation tasks to be learnable, the object count and position
("two red circles on the left", "three objects: a blue square and two yellow stars", "a green star in
the top right"). Everything is a pure function of ``(seed, stream, index)``, so any sample can be
regenerated alone, in any order, in any process.

Captions and evaluation tasks live in ``world.py``; writers to disk (img2dataset shards,
CLIP_benchmark ``wds/`` folders) in ``writer.py``.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 35),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 35),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "star")
QUADRANTS: Tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
COUNT_WORDS: Tuple[str, ...] = ("one", "two", "three", "four")
NATURAL_CLASSES: Tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)

# Supersampling factor for anti-aliased shape edges.
_SS = 2


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object; coordinates in pixels of the final image (centre, circumradius)."""

    color: str
    shape: str
    cx: float
    cy: float
    radius: float
    angle: float
    rgb: Tuple[int, int, int]
    outline: bool = False

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    def bbox(self) -> Tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in pixels."""
        return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius)


@dataclass(frozen=True)
class Background:
    """Parameters of a textured background; ``post_sigma`` > 0 adds noise over the whole image."""

    kind: str
    base: Tuple[float, float, float]
    amplitude: float
    frequency: float
    angle: float
    phase: float
    grid: int
    pixel_sigma: float
    post_sigma: float
    seed: int


@dataclass(frozen=True)
class Scene:
    """A scene: background, objects and the image side length in pixels."""

    size: int
    background: Background
    objects: Tuple[ShapeObject, ...]

    def metadata(self) -> dict:
        """JSON-friendly description (labels and pixel boxes), e.g. for localisation checks."""
        return {
            "size": self.size,
            "count": len(self.objects),
            "objects": [
                {"color": o.color, "shape": o.shape, "outline": o.outline,
                 "bbox": [round(v, 2) for v in o.bbox()]}
                for o in self.objects
            ],
        }


def sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of ``stream``: stable across processes and Python runs."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8")), int(index)])


# --------------------------------------------------------------------------- backgrounds


def sample_background(rng: np.random.Generator, *, heavy_noise: bool = False) -> Background:
    """A low-contrast grey-ish texture; ``heavy_noise`` gives a light paper with strong pixel noise."""
    if heavy_noise:
        gray = rng.uniform(150, 205)
        base = tuple(float(gray + rng.uniform(-8, 8)) for _ in range(3))
        post = float(rng.uniform(16, 24))
    else:
        gray = rng.uniform(85, 165)
        base = tuple(float(gray + rng.uniform(-15, 15)) for _ in range(3))
        post = 0.0
    return Background(
        kind=str(rng.choice(["noise", "stripes"])),
        base=base,  # type: ignore[arg-type]
        amplitude=float(rng.uniform(6, 18)),
        frequency=float(rng.uniform(1 / 14, 1 / 4)),
        angle=float(rng.uniform(0, math.pi)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        grid=int(rng.choice([4, 8, 16])),
        pixel_sigma=float(rng.uniform(2, 6)),
        post_sigma=post,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def render_background(bg: Background, size: int) -> np.ndarray:
    """(size, size, 3) float32 image in [0, 255] for ``bg``."""
    rng = np.random.default_rng(bg.seed)
    if bg.kind == "stripes":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        proj = xx * math.cos(bg.angle) + yy * math.sin(bg.angle)
        tex = np.sin(2 * math.pi * bg.frequency * proj + bg.phase)[..., None]
    elif bg.kind == "noise":
        low = rng.normal(0.0, 1.0, size=(bg.grid, bg.grid, 3))
        low8 = np.clip(128 + 40 * low, 0, 255).astype(np.uint8)
        up = np.asarray(Image.fromarray(low8).resize((size, size), Image.BILINEAR), dtype=np.float32)
        tex = (up - 128.0) / 40.0
    else:
        raise ValueError(f"unknown background kind {bg.kind!r} (expected 'noise' or 'stripes')")
    img = np.asarray(bg.base, dtype=np.float32) + bg.amplitude * tex
    img = img + rng.normal(0.0, bg.pixel_sigma, size=(size, size, 3))
    return img.astype(np.float32)


# --------------------------------------------------------------------------- shapes


def _polygon(obj: ShapeObject, scale: float) -> List[Tuple[float, float]]:
    """Vertices (supersampled pixel coordinates) of a square, triangle or star."""
    cx, cy, r = obj.cx * scale, obj.cy * scale, obj.radius * scale
    a0 = math.radians(obj.angle)
    if obj.shape == "square":
        angles, radii = [a0 + k * math.pi / 2 + math.pi / 4 for k in range(4)], [r] * 4
    elif obj.shape == "triangle":
        angles, radii = [a0 + k * 2 * math.pi / 3 - math.pi / 2 for k in range(3)], [r] * 3
    elif obj.shape == "star":
        angles = [a0 + k * math.pi / 5 - math.pi / 2 for k in range(10)]
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]
    else:
        raise ValueError(f"unknown shape {obj.shape!r} (expected one of {SHAPES})")
    return [(cx + rad * math.cos(a), cy + rad * math.sin(a)) for a, rad in zip(angles, radii)]


def draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, scale: float = 1.0) -> None:
    """Draw ``obj`` filled (or as an outline sketch) onto ``draw`` at ``scale`` x its coordinates."""
    width = max(2, int(round(obj.radius * scale * 0.3))) if obj.outline else 0
    fill = None if obj.outline else obj.rgb
    outline = obj.rgb if obj.outline else None
    if obj.shape == "circle":
        r = obj.radius * scale * 0.85  # a circle looks larger than a polygon of the same circumradius
        box = (obj.cx * scale - r, obj.cy * scale - r, obj.cx * scale + r, obj.cy * scale + r)
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    else:
        pts = _polygon(obj, scale)
        if obj.outline:
            draw.line(pts + [pts[0], pts[1]], fill=outline, width=width, joint="curve")
        else:
            draw.polygon(pts, fill=fill)


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB PIL image of ``scene.size`` pixels (anti-aliased edges)."""
    size = scene.size
    bg = np.clip(render_background(scene.background, size), 0, 255).astype(np.uint8)
    big = Image.fromarray(bg).resize((size * _SS, size * _SS), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        draw_object(draw, obj, scale=_SS)
    img = big.resize((size, size), Image.BOX)
    if scene.background.post_sigma > 0:
        rng = np.random.default_rng(scene.background.seed + 1)
        arr = np.asarray(img, dtype=np.float32)
        arr = arr + rng.normal(0.0, scene.background.post_sigma, size=arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


# --------------------------------------------------------------------------- placement


def _jitter_rgb(rng: np.random.Generator, color: str) -> Tuple[int, int, int]:
    base = np.asarray(COLORS[color], dtype=np.int64)
    return tuple(int(v) for v in np.clip(base + rng.integers(-22, 23, size=3), 0, 255))  # type: ignore


def quadrant_box(quadrant: str, size: int, radius: float) -> Tuple[float, float, float, float]:
    """(x_lo, x_hi, y_lo, y_hi) for the centre of an object of ``radius`` clearly in ``quadrant``
    (or the central region for ``"center"``)."""
    half, margin = size / 2.0, max(2.0, 0.1 * size)
    lo, hi = radius + 1.0, size - radius - 1.0
    if quadrant == "center":
        d = 0.08 * size
        return half - d, half + d, half - d, half + d
    if quadrant not in QUADRANTS:
        raise ValueError(f"unknown quadrant {quadrant!r} (expected one of {QUADRANTS} or 'center')")
    xs = (lo, half - margin) if "left" in quadrant else (half + margin, hi)
    ys = (lo, half - margin) if "top" in quadrant else (half + margin, hi)
    return xs[0], max(xs), ys[0], max(ys)


def make_object(rng: np.random.Generator, label: Tuple[str, str], cx: float, cy: float,
                radius: float, *, outline: bool = False) -> ShapeObject:
    """An object of ``label`` = (colour, shape) with a random angle and a jittered colour."""
    color, shape = label
    return ShapeObject(color=color, shape=shape, cx=float(cx), cy=float(cy), radius=float(radius),
                       angle=float(rng.uniform(0, 360)), rgb=_jitter_rgb(rng, color), outline=outline)


def place_single(rng: np.random.Generator, size: int, label: Tuple[str, str], where: str,
                 *, outline: bool = False) -> ShapeObject:
    """One large-ish object with its centre in quadrant (or centre region) ``where``."""
    radius = rng.uniform(0.13, 0.22) * size
    x0, x1, y0, y1 = quadrant_box(where, size, radius)
    return make_object(rng, label, rng.uniform(x0, x1), rng.uniform(y0, y1), radius, outline=outline)


def place_many(rng: np.random.Generator, size: int, labels: Sequence[Tuple[str, str]],
               *, outline: bool = False) -> Tuple[ShapeObject, ...]:
    """Non-overlapping smaller objects, one for each label (rejection sampling)."""
    for _ in range(100):
        objs: List[ShapeObject] = []
        for label in labels:
            radius = rng.uniform(0.08, 0.14) * size
            for _try in range(60):
                cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
                if all(math.hypot(cx - o.cx, cy - o.cy) >= radius + o.radius + 2 for o in objs):
                    objs.append(make_object(rng, label, cx, cy, radius, outline=outline))
                    break
            else:
                break
        if len(objs) == len(labels):
            return tuple(objs)
    raise RuntimeError(f"could not place {len(labels)} objects in a {size}px image")


def random_label(rng: np.random.Generator) -> Tuple[str, str]:
    colors = tuple(COLORS)
    return colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(len(SHAPES)))]
