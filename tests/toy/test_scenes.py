"""The scene generator and the fixed pixel rule that judges edits (no torch needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from toyworld import scenes
from toyworld.scenes import COLOURS, SHAPES, classify_colour, edit_case, region_colour, shape_colour_rgb


def test_six_colours_three_shapes():
    assert len(COLOURS) == 6 and len(set(COLOURS)) == 6
    assert SHAPES == ("circle", "square", "triangle")


@pytest.mark.parametrize("colour", COLOURS)
def test_rule_names_each_pure_colour(colour):
    pixels = np.full((8, 8, 3), shape_colour_rgb(colour), np.uint8)
    assert classify_colour(pixels) == colour


@pytest.mark.parametrize("colour", COLOURS)
def test_rule_names_jittered_colours(colour):
    rng = random.Random(colour)
    for _ in range(50):
        assert classify_colour(np.array([shape_colour_rgb(colour, rng)], np.uint8)) == colour


def test_rule_ignores_backgrounds_and_small_specks():
    for rgb in scenes.BACKGROUNDS.values():
        assert classify_colour(np.full((10, 10, 3), rgb, np.uint8)) is None
    region = np.full((10, 10, 3), 128, np.uint8)
    region[0, :5] = shape_colour_rgb("red")  # 5% coloured: below the threshold
    assert classify_colour(region) is None
    region[1:4] = shape_colour_rgb("blue")  # 30% blue outvotes the 5% red
    assert classify_colour(region) == "blue"


def test_rule_majority_vote():
    region = np.zeros((10, 10, 3), np.uint8)
    region[:6] = shape_colour_rgb("green")
    region[6:] = shape_colour_rgb("magenta")
    assert classify_colour(region) == "green"


def test_rule_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one pixel"):
        classify_colour(np.zeros((0, 3), np.uint8))


def test_scenes_are_seeded():
    a = scenes.random_scene(random.Random(7))
    b = scenes.random_scene(random.Random(7))
    assert a.caption == b.caption
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (32, 32) and a.image.mode == "RGB"


def test_captions_name_every_shape():
    rng = random.Random(3)
    for _ in range(100):
        scene = scenes.random_scene(rng)
        assert 1 <= len(scene.shapes) <= 3
        for shape in scene.shapes:
            assert f"a {shape.colour} {shape.kind}" in scene.caption
        if scene.background is not None:
            assert scene.caption.endswith(f"on a {scene.background} background")


def test_rule_reads_every_generated_shape():
    rng = random.Random(11)
    for _ in range(200):
        scene = scenes.single_shape_scene(rng)
        assert region_colour(scene.image, scene.shapes[0].box) == scene.shapes[0].colour


def test_edit_cases_have_an_empty_region():
    for seed in range(60):
        case = edit_case(seed)
        assert region_colour(case.image, case.box) is None  # nothing there yet: a hit must come from the edit
        mask = np.asarray(case.mask)
        x0, y0, x1, y1 = case.box
        assert mask[y0:y1, x0:x1].min() == 255 and mask.sum() == 255 * (x1 - x0) * (y1 - y0)
        assert case.prompt == f"a {case.colour} {case.kind}"
    again = edit_case(5)
    assert np.array_equal(np.asarray(again.image), np.asarray(edit_case(5).image))
