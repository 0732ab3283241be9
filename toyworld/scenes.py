"""Seeded synthetic scenes for the toy world: flat shapes in six named colours on quiet backgrounds.

The six shape colours sit 60 degrees apart on the hue circle and every background is low in saturation,
so a fixed pixel rule (:func:`classify_colour`) can tell which named colour a region holds without any
learned model. That rule is what the semantic test uses to judge edits.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Hue (degrees) of each named shape colour; 60 degrees apart so the pixel rule has wide margins.
COLOUR_HUES: dict[str, float] = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "magenta": 300.0,
}
COLOURS: tuple[str, ...] = tuple(COLOUR_HUES)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Named plain backgrounds are achromatic, so a background never reads as a shape colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235),
    "grey": (128, 128, 128),
    "black": (25, 25, 25),
}

# The pixel rule's thresholds: a pixel is "coloured" when saturated and bright enough; a region names a
# colour when enough of its pixels are coloured.
MIN_SATURATION = 0.45
MIN_VALUE = 0.35
MIN_COLOURED_FRACTION = 0.15

SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down, giving anti-aliased edges


@dataclass
class ShapeSpec:
    colour: str
    kind: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels (exclusive end), the shape's bounding box


@dataclass
class Scene:
    image: Image.Image  # RGB
    caption: str
    shapes: list[ShapeSpec] = field(default_factory=list)
    background: str | None = None  # the background's name when it is a named plain colour


def shape_colour_rgb(colour: str, rng: random.Random | None = None) -> tuple[int, int, int]:
    """An RGB value of a named colour, with a little seeded jitter so models see a range, not one value."""
    hue = COLOUR_HUES[colour]
    sat, val = 0.85, 0.9
    if rng is not None:
        hue += rng.uniform(-8.0, 8.0)
        sat = rng.uniform(0.7, 0.95)
        val = rng.uniform(0.75, 0.98)
    r, g, b = colorsys.hsv_to_rgb((hue % 360.0) / 360.0, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def _quiet_colour(rng: random.Random) -> tuple[int, int, int]:
    """A low-saturation colour: any hue, saturation below the pixel rule's threshold by a wide margin."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.1, 0.95))
    return round(r * 255), round(g * 255), round(b * 255)


def _background(size: int, rng: random.Random) -> tuple[np.ndarray, str | None]:
    """Plain named, plain tinted, or linear gradient background as HxWx3 float array, and its name."""
    kind = rng.random()
    if kind < 0.4:
        name = rng.choice(tuple(BACKGROUNDS))
        return np.broadcast_to(np.array(BACKGROUNDS[name], np.float32), (size, size, 3)).copy(), name
    if kind < 0.6:
        return np.broadcast_to(np.array(_quiet_colour(rng), np.float32), (size, size, 3)).copy(), None
    start, end = np.array(_quiet_colour(rng), np.float32), np.array(_quiet_colour(rng), np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    return start + (end - start) * ramp[..., None], None


def _shape_alpha(size: int, kind: str, box: tuple[int, int, int, int], rng: random.Random) -> np.ndarray:
    """Anti-aliased coverage (0..1, HxW) of one shape filling ``box``; a triangle is upright or inverted."""
    inverted = kind == "triangle" and rng.random() >= 0.5
    return shape_alpha(size, kind, box, inverted)


def shape_alpha(size: int, kind: str, box: tuple[int, int, int, int], inverted: bool = False) -> np.ndarray:
    """Anti-aliased coverage (0..1, size x size) of one shape filling ``box``; inverted: pointing down."""
    big = size * SUPERSAMPLE
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = (v * SUPERSAMPLE for v in box)
    if kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif kind == "triangle":
        if not inverted:
            points = [((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]
        else:
            points = [(x0, y0), (x1 - 1, y0), ((x0 + x1) / 2, y1 - 1)]
        draw.polygon(points, fill=255)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPES}")
    small = layer.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _place_box(
    size: int, extent: int, taken: list[tuple[int, int, int, int]], rng: random.Random, gap: int = 1
) -> tuple[int, int, int, int] | None:
    for _ in range(50):
        x, y = rng.randint(0, size - extent), rng.randint(0, size - extent)
        box = (x, y, x + extent, y + extent)
        if not any(_overlaps(box, other, gap) for other in taken):
            return box
    return None


def shape_extent_range(size: int) -> tuple[int, int]:
    """Smallest and largest shape side in pixels at this image size (about 1/4 to 1/2.2 of the side)."""
    return max(4, round(size * 0.25)), max(5, round(size / 2.2))


def render(
    size: int,
    shapes: list[ShapeSpec],
    rng: random.Random,
    background: tuple[np.ndarray, str | None] | None = None,
) -> Scene:
    """Paint ``shapes`` over a (given or seeded) background and caption the result."""
    canvas, bg_name = background if background is not None else _background(size, rng)
    canvas = canvas.copy()
    for shape in shapes:
        alpha = _shape_alpha(size, shape.kind, shape.box, rng)[..., None]
        colour = np.array(shape_colour_rgb(shape.colour, rng), np.float32)
        canvas = canvas * (1.0 - alpha) + colour * alpha
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    return Scene(image, caption_for(shapes, bg_name), list(shapes), bg_name)


def caption_for(shapes: list[ShapeSpec], background: str | None) -> str:
    parts = [f"a {s.colour} {s.kind}" for s in shapes]
    if not parts:
        text = "an empty picture"
    elif len(parts) == 1:
        text = parts[0]
    else:
        text = ", ".join(parts[:-1]) + " and " + parts[-1]
    if background is not None:
        text += f" on a {background} background"
    return text


def random_scene(rng: random.Random, size: int = 32, max_shapes: int = 3) -> Scene:
    """One to ``max_shapes`` non-overlapping shapes on a random background."""
    low, high = shape_extent_range(size)
    taken: list[ShapeSpec] = []
    for _ in range(rng.randint(1, max_shapes)):
        box = _place_box(size, rng.randint(low, high), [s.box for s in taken], rng)
        if box is None:
            continue
        taken.append(ShapeSpec(rng.choice(COLOURS), rng.choice(SHAPES), box))
    return render(size, taken, rng)


def single_shape_scene(
    rng: random.Random, size: int = 32, colour: str | None = None, kind: str | None = None
) -> Scene:
    """Exactly one shape (random or given colour/kind) on a random background."""
    low, high = shape_extent_range(size)
    extent = rng.randint(low, high)
    box = _place_box(size, extent, [], rng)
    assert box is not None  # an empty canvas always has room
    spec = ShapeSpec(colour or rng.choice(COLOURS), kind or rng.choice(SHAPES), box)
    return render(size, [spec], rng)


@dataclass
class EditCase:
    """A held-out scene with an empty square region to fill, plus the prompt to fill it with."""

    seed: int
    image: Image.Image  # RGB
    mask: Image.Image  # L, 255 inside the region to edit
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the region
    colour: str
    kind: str

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.kind}"


def edit_case(seed: int, size: int = 32, region: int | None = None) -> EditCase:
    """Seeded scene with zero to two shapes kept clear of a square region, and a target for it.

    The target colour is drawn from the six named colours; the background never names a colour under
    :func:`classify_colour`, so an edit that leaves the region as background cannot score a hit.
    """
    rng = random.Random(f"toyworld-edit-{seed}")
    region = region or round(size * 0.5)
    x, y = rng.randint(0, size - region), rng.randint(0, size - region)
    hole = (x, y, x + region, y + region)
    scene = render(size, shapes_clear_of(size, hole, rng), rng)
    return EditCase(seed, scene.image, box_mask(size, hole), hole, rng.choice(COLOURS), rng.choice(SHAPES))


def shapes_clear_of(size: int, hole: tuple[int, int, int, int], rng: random.Random) -> list[ShapeSpec]:
    """Zero to two seeded shapes placed clear of ``hole`` (an edit's region) and of each other."""
    low, high = shape_extent_range(size)
    taken: list[ShapeSpec] = []
    for _ in range(rng.randint(0, 2)):
        box = _place_box(size, rng.randint(low, high), [hole] + [s.box for s in taken], rng)
        if box is not None:
            taken.append(ShapeSpec(rng.choice(COLOURS), rng.choice(SHAPES), box))
    return taken


def box_mask(size: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A size x size selection ("L"): 255 inside ``box`` (x0, y0, x1, y1), 0 elsewhere."""
    mask = np.zeros((size, size), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    return Image.fromarray(mask, "L")


def classify_colour(pixels: np.ndarray) -> str | None:
    """The fixed pixel rule: which named colour a region holds, or None when it holds none.

    ``pixels`` is any array of RGB values (uint8 0..255, shape [..., 3]). A pixel counts as coloured when
    its HSV saturation >= MIN_SATURATION and value >= MIN_VALUE; its hue votes for the nearest of the six
    named hues. The region names the colour with most votes if at least MIN_COLOURED_FRACTION of its
    pixels are coloured; otherwise None.
    """
    rgb = np.asarray(pixels, np.float32).reshape(-1, 3) / 255.0
    if rgb.shape[0] == 0:
        raise ValueError("classify_colour needs at least one pixel")
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    coloured = (saturation >= MIN_SATURATION) & (high >= MIN_VALUE)
    if coloured.mean() < MIN_COLOURED_FRACTION:
        return None
    r, g, b = rgb[coloured].T
    c = np.maximum(chroma[coloured], 1e-6)
    mx = high[coloured]
    hue = (
        np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0)) * 60.0
    )
    hues = np.array(list(COLOUR_HUES.values()), np.float32)
    distance = np.abs((hue[:, None] - hues[None, :] + 180.0) % 360.0 - 180.0)
    votes = np.bincount(distance.argmin(axis=1), minlength=len(hues))
    return COLOURS[int(votes.argmax())]


def region_colour(image: Image.Image, box: tuple[int, int, int, int]) -> str | None:
    """classify_colour of an image's box (x0, y0, x1, y1)."""
    return classify_colour(np.asarray(image.convert("RGB"))[box[1] : box[3], box[0] : box[2]])
