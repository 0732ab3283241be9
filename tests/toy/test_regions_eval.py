"""toyworld/regions_eval.py's scenes and judging (issue 39): two regions, one in each half, two colours, a
hidden box clear of both; a painted candidate is judged per region and for leaks."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from toyworld.regions_eval import Tally, regions_case
from toyworld.scenes import COLOUR_HUES


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_scenes_are_seeded_with_a_region_in_each_half_and_two_colours() -> None:
    for seed in range(40):
        case = regions_case(seed)
        again = regions_case(seed)
        assert case.boxes == again.boxes and np.array_equal(np.asarray(case.image), np.asarray(again.image))
        left, right = case.boxes
        assert left[2] <= 16 <= right[0]
        assert case.targets[0][0] != case.targets[1][0]
        if case.hidden is not None:
            assert not any(_overlap(case.hidden, box) for box in case.boxes)


def _paint(case, colours) -> Image.Image:
    image = case.image.copy()
    draw = ImageDraw.Draw(image)
    for box, colour in zip(case.boxes, colours):
        hue = COLOUR_HUES[colour] / 360.0
        rgb = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 1.0, 1.0))
        draw.rectangle((box[0] + 1, box[1] + 1, box[2] - 2, box[3] - 2), fill=rgb)
    return image


def test_each_region_is_judged_by_its_own_colour_and_a_swap_is_a_leak() -> None:
    case = regions_case(3)
    right, swapped = Tally(), Tally()
    colours = [case.targets[0][0], case.targets[1][0]]
    right.add(case, [_paint(case, colours)])
    swapped.add(case, [_paint(case, colours[::-1])])
    assert right.colour == (1, 1) and right.both_colour == 1 and right.leaks == 0
    assert swapped.colour == (0, 0) and swapped.leaks == 1
    assert right.background_exact and right.hidden_exact
    moved = case.image.copy()
    moved.putpixel((0, 0) if case.hidden is None else case.hidden[:2], (255, 0, 0))
    touched = Tally()
    touched.add(case, [moved])
    assert not touched.background_exact
