"""A judge of shape that does not use the toy CLIP: fit the outline of the edit's coloured pixels.

The pixels the pixel rule (``scenes.classify_colour``) calls the region's colour form a binary mask; its
largest 4-connected component is the drawn object. Each candidate outline (a circle, a square, an upright
and an inverted triangle) is drawn into the component's bounding box by the scene renderer itself, and the
outline with the highest intersection-over-union names the shape, if that IoU reaches ``MIN_IOU``.
Otherwise (a ragged blob, a speck, no colour at all) the judge names no shape. A region filled edge to edge
with one colour is a square, which is what it looks like.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Optional

import numpy as np
from PIL import Image

from toyworld.scenes import (
    COLOUR_HUES,
    COLOURS,
    MIN_SATURATION,
    MIN_VALUE,
    SHAPES,
    classify_colour,
    shape_alpha,
)

MIN_IOU = 0.6  # below this, no outline fits: the judge names no shape
MIN_PIXELS = 6  # a component smaller than this is a speck, not a shape


def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    """HxW bool: pixels the pixel rule counts as coloured and whose hue is nearest ``colour``."""
    rgb = np.asarray(pixels, np.float32)[..., :3] / 255.0
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    coloured = (saturation >= MIN_SATURATION) & (high >= MIN_VALUE)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    c = np.maximum(chroma, 1e-6)
    hue = np.where(high == r, ((g - b) / c) % 6.0, np.where(high == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    hues = np.array(list(COLOUR_HUES.values()), np.float32)
    distance = np.abs((hue[..., None] * 60.0 - hues + 180.0) % 360.0 - 180.0)
    return coloured & (distance.argmin(axis=-1) == COLOURS.index(colour))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a bool mask (all False when the mask is empty)."""
    height, width = mask.shape
    labels = np.zeros(mask.shape, np.int32)
    best, best_size, label = 0, 0, 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        label += 1
        labels[y, x] = label
        queue, size = deque([(y, x)]), 0
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else np.zeros(mask.shape, bool)


def _outlines(shape: tuple[int, int], box: tuple[int, int, int, int]) -> dict[str, list[np.ndarray]]:
    """Each shape kind drawn into ``box`` of an HxW canvas (both triangle orientations), as bool masks."""
    height, width = shape
    side = max(height, width)
    outlines: dict[str, list[np.ndarray]] = {kind: [] for kind in SHAPES}
    for kind in SHAPES:
        for inverted in (False, True) if kind == "triangle" else (False,):
            outlines[kind].append(shape_alpha(side, kind, box, inverted)[:height, :width] >= 0.5)
    return outlines


def judge_mask(mask: np.ndarray) -> tuple[Optional[str], float]:
    """(shape, IoU) of the outline that best fits the largest component of ``mask``; None when none fits."""
    component = largest_component(np.asarray(mask, bool))
    if component.sum() < MIN_PIXELS:
        return None, 0.0
    ys, xs = np.nonzero(component)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    best_kind, best_iou = None, 0.0
    for kind, candidates in _outlines(component.shape, box).items():
        for outline in candidates:
            iou = float((outline & component).sum() / max(1, (outline | component).sum()))
            if iou > best_iou:
                best_kind, best_iou = kind, iou
    return (best_kind if best_iou >= MIN_IOU else None), best_iou


def judge_shape(pixels: np.ndarray, colour: Optional[str] = None) -> Optional[str]:
    """The shape drawn in ``pixels`` (HxWx3 uint8) in ``colour`` (default: the pixel rule's colour)."""
    colour = colour or classify_colour(pixels)
    if colour is None:
        return None
    return judge_mask(colour_mask(pixels, colour))[0]


def region_shape(
    image: Image.Image, box: tuple[int, int, int, int], colour: Optional[str] = None
) -> Optional[str]:
    """judge_shape of an image's box (x0, y0, x1, y1)."""
    return judge_shape(np.asarray(image.convert("RGB"))[box[1] : box[3], box[0] : box[2]], colour)


def validate(count: int = 600, size: int = 32, seed: int = 0) -> dict:
    """The judge's accuracy on clean rendered single shapes (held out: their own seed stream), per shape."""
    from toyworld.scenes import single_shape_scene

    rng = random.Random(f"toyworld-judge-{seed}")
    right = {kind: 0 for kind in SHAPES}
    total = {kind: 0 for kind in SHAPES}
    for index in range(count):
        kind = SHAPES[index % len(SHAPES)]
        scene = single_shape_scene(rng, size, kind=kind)
        total[kind] += 1
        right[kind] += judge_shape(np.asarray(scene.image), scene.shapes[0].colour) == kind
    return {
        "count": count,
        "accuracy": sum(right.values()) / count,
        "per_shape": {kind: right[kind] / total[kind] for kind in SHAPES},
    }
