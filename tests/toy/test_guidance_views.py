"""The toy CLIP's guidance views: what the editor's guidance shows CLIP, made from a picture and a region."""

from __future__ import annotations

import torch

from engine.models.unet import unet_from_flags
from toyworld.data import MASK_GREY, region_shape_bank
from toyworld.train_adm import TOY_MODEL_FLAGS
from toyworld.train_clip import GuidanceViews


def _views(steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    unet = unet_from_flags(TOY_MODEL_FLAGS)  # random weights: the formula, not the model, is under test
    pictures, regions, _ = region_shape_bank(6, 32, 0)
    pictures = pictures.float() / 255.0
    masks = regions.float()
    views = GuidanceViews(unet, steps=steps)(pictures, masks, torch.Generator().manual_seed(seed))
    return pictures, masks, views


def test_views_are_grey_outside_the_region_and_the_picture_at_the_last_step():
    pictures, masks, views = _views(steps=1)  # only t = 0: x_in is x_0 plus a trace of noise
    outside = masks.expand_as(views) == 0
    assert torch.equal(views[outside], torch.full_like(views[outside], MASK_GREY))
    inside = ~outside
    assert (views[inside] - pictures[inside]).abs().mean() < 0.03


def test_early_views_are_far_from_the_picture_and_follow_the_generator():
    pictures, masks, views = _views(steps=20)
    inside = masks.expand_as(views) == 1
    assert (views[inside] - pictures[inside]).abs().mean() > 0.05  # most levels hide the picture
    _, _, again = _views(steps=20)
    _, _, other = _views(steps=20, seed=1)
    assert torch.equal(views, again) and not torch.equal(views, other)
    outside = masks.expand_as(views) == 0
    assert torch.equal(views[outside], other[outside])  # only the region's pixels differ
