"""The square context region around a mask, shared by the Krita plugin and the engine.

Standard library only (Python >= 3.8): the plugin runs it inside Krita to send only this region, the engine
runs it to crop what it receives. Both must agree to the pixel, so there is exactly one implementation.
"""

import math
from typing import List, Optional, Sequence, Tuple

# Fraction of the mask's larger side added as context on each side: the model sees the mask in the middle
# two thirds of the square, enough surroundings for the edit to blend in.
DEFAULT_PAD_FRACTION = 0.25
# The detail stage's tiles (engine/editing/paper/detail.py) overlap by this fraction of their side.
TILE_OVERLAP = 0.25


def mask_bbox_from_rows(rows: Sequence[Sequence[int]]) -> Optional[Tuple[int, int, int, int]]:
    """Bounding box (left, top, right, bottom; right/bottom exclusive) of the non-zero values, or None."""
    left = top = None
    right = bottom = 0
    for y, row in enumerate(rows):
        xs = [x for x, value in enumerate(row) if value]
        if not xs:
            continue
        if top is None:
            top = y
        bottom = y + 1
        left = xs[0] if left is None else min(left, xs[0])
        right = max(right, xs[-1] + 1)
    if left is None or top is None:
        return None
    return left, top, right, bottom


def context_box(
    mask_bbox: Sequence[int],
    image_w: int,
    image_h: int,
    pad_fraction: float = DEFAULT_PAD_FRACTION,
    min_size: int = 0,
) -> Tuple[int, int, int, int]:
    """The square region (x, y, w, h) to edit around a mask's bounding box.

    mask_bbox is (left, top, right, bottom) with right/bottom exclusive, as PIL's ``getbbox()`` gives it.
    The square is centred on the box, its side is the box's larger side plus ``pad_fraction`` of it on
    each side (at least ``min_size``, so a tiny mask is not blown up from a handful of pixels), then moved
    to lie inside the image. Where the image is narrower than the square in one direction the region is
    clamped to the image there, so it can be non-square; it always contains the whole mask bounding box.
    """
    if len(mask_bbox) != 4:
        raise ValueError(f"mask_bbox must have 4 values (left, top, right, bottom), got {len(mask_bbox)}")
    left, top, right, bottom = (int(v) for v in mask_bbox)
    if image_w <= 0 or image_h <= 0:
        raise ValueError(f"image size must be positive, got {image_w}x{image_h}")
    if not (0 <= left < right <= image_w and 0 <= top < bottom <= image_h):
        raise ValueError(
            f"mask bounding box {tuple(mask_bbox)} is empty or outside the {image_w}x{image_h} image"
        )
    if pad_fraction < 0:
        raise ValueError(f"pad_fraction must be >= 0, got {pad_fraction}")

    box_w, box_h = right - left, bottom - top
    side = max(box_w, box_h)
    side = max(side + 2 * int(round(side * pad_fraction)), int(min_size))
    width, height = min(side, image_w), min(side, image_h)
    # Centre on the mask box (twice the centre, to stay in integers), then shift inside the image.
    x = (left + right - width) // 2
    y = (top + bottom - height) // 2
    x = min(max(x, 0), image_w - width)
    y = min(max(y, 0), image_h - height)
    return x, y, width, height


def tile_starts(length: int, tile: int, overlap: float = TILE_OVERLAP) -> List[int]:
    """Evenly spread starts of tiles of side ``tile`` covering ``length``, overlapping by at least
    ``overlap`` x tile: the detail stage's tiles, and the plugin's count of them for its time estimate."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]
