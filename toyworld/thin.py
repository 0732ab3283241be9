"""Thin selections: held-out edit cases whose selection is a bar 4-6 px wide (2-3 latent cells of toy-latent).

``thin_case(seed)`` is ``scenes.edit_case``'s twin with its own seed stream ("toyworld-thin-{seed}", so no
setting was ever chosen on these scenes): a straight bar, horizontal or vertical, 4, 5 or 6 px wide and 1/2
to 3/4 of the image side long, placed anywhere; zero to two shapes are then placed clear of it (a gap of at
least a pixel), so the bar covers background only. The prompt is "a {colour} {shape}" as in the main cases
(the toy text encoders know no other words); the shape cannot show in a bar and is not judged.

At 32 px toy-latent's latent grid is 16x16 (a cell = 2 px); the selection reaches the grid by nearest
neighbour (cell i takes pixel 2i), so a 4 px bar covers 2 cells, a 5 px one 2 or 3, a 6 px one 3: the
edit never depends on progressive shrinking to touch the bar at all, which is the case the paper's
shrinking is for (a selection a few cells wide whose dilated masks give the model room to draw).

Judged per candidate, inside the bar (the case's ``box`` is the bar itself):
- colour hit: the pixel rule (scenes.classify_colour) names the prompted colour;
- coloured: the pixel rule names any colour (the background never reads as one: the bar was edited into
  an object colour at all);
- changed: the mean absolute RGB change from the source, over the bar, is at least ``CHANGED_LEVELS``
  (0..255). toy-latent's VAE alone moves a reconstructed background by several levels, so small changes are
  not counted; the row also reports the mean change.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
from PIL import Image

from toyworld.scenes import COLOURS, SHAPES, EditCase, box_mask, render, shapes_clear_of

WIDTHS = (4, 5, 6)  # px: 2-3 cells of a 16x16 latent grid at 32 px
CHANGED_LEVELS = 12.0  # mean |change| over the bar, 0..255, above which the bar counts as changed


def thin_case(seed: int, size: int = 32) -> EditCase:
    """Seeded scene with a thin bar selection over background only, and a target "a {colour} {shape}"."""
    rng = random.Random(f"toyworld-thin-{seed}")
    width = max(1, round(rng.choice(WIDTHS) * size / 32))  # the same cells at other sizes
    length = rng.randint(round(size * 0.5), round(size * 0.75))
    across, along = (width, length) if rng.random() < 0.5 else (length, width)  # vertical, horizontal
    x, y = rng.randint(0, size - across), rng.randint(0, size - along)
    bar = (x, y, x + across, y + along)
    scene = render(size, shapes_clear_of(size, bar, rng), rng)
    return EditCase(seed, scene.image, box_mask(size, bar), bar, rng.choice(COLOURS), rng.choice(SHAPES))


def region_change(source: Image.Image, result: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean absolute RGB change (0..255) over ``box`` (x0, y0, x1, y1) from ``source`` to ``result``."""
    x0, y0, x1, y1 = box
    a = np.asarray(source.convert("RGB"), np.float32)[y0:y1, x0:x1]
    b = np.asarray(result.convert("RGB"), np.float32)[y0:y1, x0:x1]
    return float(np.abs(a - b).mean())


def thin_rates(trials: Sequence) -> dict:
    """Thin-selection figures of judged trials (toyworld.evaluate.Trial): colour hit, coloured, changed."""
    count = len(trials)

    def share(values: Sequence[bool]) -> float:
        return round(sum(values) / count, 4) if count else 0.0

    return {
        "trials": count,
        "colour_hit": share([t.colour_hit for t in trials]),
        "coloured": share([t.got_colour is not None for t in trials]),
        "changed": share([t.change >= CHANGED_LEVELS for t in trials]),
        "mean_change": round(float(np.mean([t.change for t in trials])), 2) if count else 0.0,
    }
