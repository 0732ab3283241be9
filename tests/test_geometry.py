"""bridge.geometry.context_box: the square context region the plugin sends and the engine crops."""

import itertools
import random

import pytest

from bridge.geometry import context_box, mask_bbox_from_rows


def _contains(box, bbox):
    x, y, w, h = box
    left, top, right, bottom = bbox
    return x <= left and y <= top and x + w >= right and y + h >= bottom


def test_square_padded_and_centred_in_a_large_image():
    box = context_box((1000, 500, 1100, 540), 4000, 3000)
    x, y, w, h = box
    assert w == h == 150  # 100 px side + 25% on each side
    assert (x + w / 2, y + h / 2) == (1050, 520)
    assert _contains(box, (1000, 500, 1100, 540))


def test_min_size_gives_small_masks_model_sized_context():
    assert context_box((10, 10, 14, 14), 1000, 1000, min_size=256)[2:] == (256, 256)


def test_clamped_to_the_image_at_corners():
    assert context_box((0, 0, 20, 20), 500, 400, min_size=256) == (0, 0, 256, 256)
    assert context_box((480, 380, 500, 400), 500, 400, min_size=256) == (244, 144, 256, 256)


def test_narrow_image_gives_non_square_region_covering_the_mask():
    box = context_box((0, 10, 300, 20), 300, 40)
    assert box == (0, 0, 300, 40)


def test_always_inside_the_image_and_contains_the_mask():
    rng = random.Random(7)
    for _ in range(500):
        width, height = rng.randint(1, 900), rng.randint(1, 900)
        left, right = sorted(rng.sample(range(width + 1), 2)) if width > 1 else (0, 1)
        top, bottom = sorted(rng.sample(range(height + 1), 2)) if height > 1 else (0, 1)
        bbox = (left, top, right, bottom)
        x, y, w, h = context_box(bbox, width, height, min_size=rng.choice([0, 64, 256]))
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert _contains((x, y, w, h), bbox)
        if w != h:  # only when the image is too narrow for the square
            assert min(w, h) in (width, height)


@pytest.mark.parametrize(
    "bbox, size",
    [((5, 5, 5, 10), (20, 20)), ((0, 0, 21, 5), (20, 20)), ((-1, 0, 5, 5), (20, 20)), ((0, 0, 1, 1), (0, 5))],
)
def test_bad_boxes_are_clear_errors(bbox, size):
    with pytest.raises(ValueError):
        context_box(bbox, *size)


def test_mask_bbox_from_rows():
    rows = [[0, 0, 0, 0], [0, 0, 9, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert mask_bbox_from_rows(rows) == (1, 1, 3, 3)
    assert mask_bbox_from_rows([[0] * 3] * 2) is None
    full = [[1] * 5 for _ in range(2)]
    assert mask_bbox_from_rows(full) == (0, 0, 5, 2)
    assert all(isinstance(v, int) for v in itertools.chain(mask_bbox_from_rows(full)))
