"""The shape judge (no CLIP): it names clean rendered shapes, and names nothing it cannot fit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from toyworld import judge
from toyworld.scenes import SHAPES, ShapeSpec, render, shape_colour_rgb


def test_judge_names_clean_held_out_shapes():
    result = judge.validate(count=300)
    assert result["count"] == 300
    assert result["accuracy"] >= 0.95, result
    assert min(result["per_shape"].values()) >= 0.9, result


@pytest.mark.parametrize("kind", SHAPES)
def test_judge_reads_a_shape_in_an_edit_sized_region(kind):
    grey = np.full((16, 16, 3), 128, np.float32)
    scene = render(16, [ShapeSpec("blue", kind, (2, 3, 14, 15))], random.Random(1), background=(grey, "grey"))
    assert judge.judge_shape(np.asarray(scene.image)) == kind
    assert judge.judge_shape(np.asarray(scene.image), "red") is None  # no red pixels: no shape


def test_filled_region_is_a_square_and_nothing_is_no_shape():
    filled = np.full((16, 16, 3), shape_colour_rgb("green"), np.uint8)
    assert judge.judge_shape(filled) == "square"
    assert judge.judge_shape(np.full((16, 16, 3), 200, np.uint8)) is None


def test_ragged_blob_and_speck_are_no_shape():
    rng = np.random.default_rng(0)
    blob = np.full((16, 16, 3), 128, np.uint8)
    blob[rng.random((16, 16)) < 0.45] = shape_colour_rgb("red")  # scattered pixels, no outline
    assert judge.judge_shape(blob) is None
    speck = np.full((16, 16, 3), 128, np.uint8)
    speck[5:7, 5:7] = shape_colour_rgb("red")  # 4 pixels: under MIN_PIXELS
    assert judge.judge_mask(speck[..., 0] != 128) == (None, 0.0)


def test_largest_component_keeps_the_biggest_piece():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True
    mask[5:9, 5:9] = True
    kept = judge.largest_component(mask)
    assert kept.sum() == 16 and kept[6, 6] and not kept[0, 0]
    assert not judge.largest_component(np.zeros((4, 4), bool)).any()
