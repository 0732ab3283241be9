"""Edge seam at the selection's border: does the edit's result continue the background across the border?

Definition (per candidate). The border pairs are the 4-neighbour pixel pairs (p, q) with p inside the
binary selection (mask >= 128) and q outside it. For an image I, the border step is the mean over those
pairs of |I(p) - I(q)| averaged over R, G and B, in 0..255 levels. The seam is

    seam = border step in the result - border step in the source

so an edit that continues the background across the border scores about 0 (a flat or gradient background
has a small step of its own, which the source term removes), and a hard step of height h along the whole
border scores h. Outside the selection the result is the source byte for byte (the product's composite),
so the seam measures only how the inside meets the untouched outside. It can be negative (an edit smoother
at the border than the source was); the toy scenes keep every object clear of the selection, so the source
step is the background's own.

An object the prompt asks for may legitimately be drawn up to the border (a square filling the region edge
to edge is what the shape judge calls a square), and its edge then counts as a "seam" although it is the
object's outline, not a blending fault. So a second figure, the **background seam**, counts only the pairs
whose inside pixel is not coloured by the pixel rule in the result (HSV saturation < MIN_SATURATION or
value < MIN_VALUE: background-like; every toy background is below the rule, every object colour above it):
where the result shows background at the border, it should continue the outside's background. It is None
when no border pair is background-like (the object covers the whole border). Both are reported; neither is
a judge of the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from toyworld.scenes import MIN_SATURATION, MIN_VALUE


@dataclass(frozen=True)
class Seam:
    seam: float  # all border pairs
    background: Optional[float]  # pairs whose inside pixel is background-like in the result; None if none
    pairs: int  # border pairs counted in ``seam``
    background_pairs: int


def border_pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside) flat indices of every 4-neighbour pair straddling the binary selection's border."""
    inside = np.asarray(mask) >= 128
    height, width = inside.shape
    index = np.arange(height * width).reshape(height, width)
    ins, outs = [], []
    # each direction: a pixel and its right / lower neighbour, in either order across the border
    for a, b in ((index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])):
        ia, ib = inside.flat[a], inside.flat[b]
        ins += [a[ia & ~ib], b[ib & ~ia]]
        outs += [b[ia & ~ib], a[ib & ~ia]]
    return np.concatenate(ins), np.concatenate(outs)


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Bool per pixel (``pixels``: [..., 3] uint8): coloured by the pixel rule (scenes.classify_colour)."""
    rgb = np.asarray(pixels, np.float32)[..., :3] / 255.0
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    return (saturation >= MIN_SATURATION) & (high >= MIN_VALUE)


def _step(pixels: np.ndarray, ins: np.ndarray, outs: np.ndarray) -> np.ndarray:
    flat = np.asarray(pixels, np.float32).reshape(-1, 3)
    return np.abs(flat[ins] - flat[outs]).mean(axis=1)


def edge_seam(source, result, mask) -> Seam:
    """The seam of ``result`` against ``source`` at ``mask``'s border (images: PIL or HxWx3 uint8 arrays;
    mask: PIL L or HxW, 255 = selected). See the module docstring."""
    src = np.asarray(source.convert("RGB") if hasattr(source, "convert") else source)
    out = np.asarray(result.convert("RGB") if hasattr(result, "convert") else result)
    ins, outs = border_pairs(np.asarray(mask))
    if len(ins) == 0:
        return Seam(0.0, None, 0, 0)
    delta = _step(out, ins, outs) - _step(src, ins, outs)
    plain = ~coloured(out.reshape(-1, 3)[ins])
    background = float(delta[plain].mean()) if plain.any() else None
    return Seam(float(delta.mean()), background, int(len(ins)), int(plain.sum()))


def summary(values: Sequence[Optional[float]]) -> dict:
    """Mean, median and 90th percentile of per-candidate seams (None values skipped), and how many counted."""
    kept = np.array([v for v in values if v is not None], np.float64)
    if kept.size == 0:
        return {"count": 0, "mean": None, "median": None, "p90": None}
    return {
        "count": int(kept.size),
        "mean": round(float(kept.mean()), 3),
        "median": round(float(np.median(kept)), 3),
        "p90": round(float(np.percentile(kept, 90)), 3),
    }
