"""Training batches for the toy models, built from the seeded scene generator."""

from __future__ import annotations

import random

import numpy as np
import torch

from toyworld.scenes import (
    COLOURS,
    SHAPES,
    ShapeSpec,
    random_scene,
    render,
    shape_extent_range,
    shapes_clear_of,
    single_shape_scene,
)

MASK_GREY = 0.5  # what the editor's masking (zero in [-1, 1]) looks like in [0, 1]


def to_tensor01(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 arrays -> float [B, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def scene_bank(count: int, size: int, seed: int, max_shapes: int = 3) -> tuple[torch.Tensor, list[str]]:
    """``count`` seeded whole scenes as uint8 [N, 3, H, W] and their captions."""
    rng = random.Random(f"toyworld-scenes-{seed}")
    scenes = [random_scene(rng, size, max_shapes) for _ in range(count)]
    images = torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])).permute(0, 3, 1, 2)
    return images.contiguous(), [s.caption for s in scenes]


def focus_scene_bank(count: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Edit-like scenes: one shape inside a square region of 40-60% of the side, up to two others around
    it, captioned with that one shape only ("a {colour} {shape}"), as an edit's prompt names its region.

    Its own seeded stream (not ``edit_case``'s), so no evaluation scene is among them."""
    rng = random.Random(f"toyworld-focus-{seed}")
    low, high = shape_extent_range(size)
    images, captions = [], []
    for _ in range(count):
        region = rng.randint(round(size * 0.4), round(size * 0.6))
        x, y = rng.randint(0, size - region), rng.randint(0, size - region)
        taken = shapes_clear_of(size, (x, y, x + region, y + region), rng)
        extent = rng.randint(low, min(high, region))
        left, top = x + rng.randint(0, region - extent), y + rng.randint(0, region - extent)
        target = ShapeSpec(rng.choice(COLOURS), rng.choice(SHAPES), (left, top, left + extent, top + extent))
        images.append(np.asarray(render(size, taken + [target], rng).image))
        captions.append(f"a {target.colour} {target.kind}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), captions


def _mask_around(shape: ShapeSpec, size: int, rng: random.Random) -> np.ndarray:
    """A square mask (HxW bool) that holds the whole shape plus a random margin, like an edit region."""
    x0, y0, x1, y1 = shape.box
    extent = max(x1 - x0, y1 - y0)
    side = rng.randint(min(size, max(extent + 2, size // 3)), min(size, extent + size // 3))
    left = rng.randint(max(0, x1 - side), min(x0, size - side))
    top = rng.randint(max(0, y1 - side), min(y0, size - side))
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


PALE_FRACTION = 0.15  # share of masked shapes washed out to near-grey, captioned "a white/grey {shape}"


def _washed_out(
    pixels: np.ndarray, box: tuple[int, int, int, int], rng: random.Random
) -> tuple[np.ndarray, str]:
    """The shape's box with its saturation cut to 10-35%: a pale shape is not its hue's colour.

    Without such negatives the guidance happily drives "a yellow ..." towards near-white, which the
    pixel rule (rightly) does not call yellow.
    """
    x0, y0, x1, y1 = box
    region = pixels[y0:y1, x0:x1].astype(np.float32)
    grey = region.mean(axis=-1, keepdims=True)
    region = grey + (region - grey) * rng.uniform(0.1, 0.35)
    lift = rng.uniform(0.0, 0.5)  # often lighter too, as the washed-out guidance results are
    region = region + (255.0 - region) * lift
    out = pixels.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out, "white" if region.mean() > 170 else "grey"


def region_shape_bank(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Single shapes with an edit-like square region around each: uint8 [N, 3, H, W] whole pictures, bool
    [N, 1, H, W] regions and captions "a {colour} {shape}" (a few washed-out ones "a white/grey {shape}")."""
    rng = random.Random(f"toyworld-masked-{seed}")
    images, masks, captions = [], [], []
    for _ in range(count):
        scene = single_shape_scene(rng, size)
        shape = scene.shapes[0]
        mask = _mask_around(shape, size, rng)
        pixels = np.asarray(scene.image).copy()
        colour = shape.colour
        if rng.random() < PALE_FRACTION:
            pixels, colour = _washed_out(pixels, shape.box, rng)
        images.append(pixels)
        masks.append(mask)
        captions.append(f"a {colour} {shape.kind}")
    pictures = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pictures, torch.from_numpy(np.stack(masks))[:, None], captions


def grey_outside(pictures: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """uint8 pictures with everything outside their regions mid-grey, as the guidance's CLIP sees them."""
    return torch.where(regions, pictures, torch.tensor(round(MASK_GREY * 255), dtype=torch.uint8))


# Scales of the multi-scale crops: a scene drawn at 2-8x the model's size, cut to the model's size. The
# detail stage shows the model tiles of a candidate upscaled 3x (the toy world's detail scenes) to 19x (a
# 600 px selection in Krita): shapes larger than the tile, long straight or gently curved outlines, flat
# patches. Scenes are drawn at 4x and box-filtered at every size, so an outline is ~1 px wide at any scale.
CROP_SCALES: tuple[int, ...] = (2, 3, 4, 6, 8)


def crop_bank(count: int, size: int, seed: int, scales: tuple[int, ...] = CROP_SCALES) -> torch.Tensor:
    """``count`` seeded ``size`` px crops of whole scenes drawn at ``scales`` x ``size``: uint8 [N, 3, H, W].

    Half the crops are centred on a random point of a shape's outline (so edges are common, as in the tiles
    that matter), half anywhere (so flat patches and gradients are learned too)."""
    rng = random.Random(f"toyworld-crops-{seed}")
    crops = []
    for _ in range(count):
        big = size * rng.choice(scales)
        scene = random_scene(rng, big)
        if scene.shapes and rng.random() < 0.5:
            x0, y0, x1, y1 = rng.choice(scene.shapes).box
            if rng.random() < 0.5:  # a point on the top or bottom side of its box, else on the left or right
                cx, cy = rng.randint(x0, x1), rng.choice((y0, y1))
            else:
                cx, cy = rng.choice((x0, x1)), rng.randint(y0, y1)
        else:
            cx, cy = rng.randint(0, big), rng.randint(0, big)
        left = min(max(0, cx - size // 2), big - size)
        top = min(max(0, cy - size // 2), big - size)
        crops.append(np.asarray(scene.image)[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
