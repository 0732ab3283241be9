"""Regions (issue 39): several selections, each with its own prompt, edited in one job.

A job's regions are (mask, prompt) pairs over the source image. The edited area is their union (each pixel
the largest of the regions' values), so every pixel outside all of them stays the source's, byte for byte;
the job's own prompt is the background prompt, the one that conditions the rest. One region is exactly a
single-selection edit with that region's mask and prompt (editor.edit).

Both methods read the regions on the model's square: ``region_weights`` gives each region's share of every
pixel there (overlaps by the masks' values, normalised; the background's share is what the regions leave),
for the latent method's attention masks; ``region_masks`` gives each region's binary mask, for the paper
method's CLIP losses and for ranking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from bridge.limits import DEFAULT_LIMITS
from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams
from engine.errors import InputError

MAX_REGIONS = DEFAULT_LIMITS.max_regions  # bridge/limits.py's: the engine API refuses more as the bridge does


@dataclass(frozen=True)
class Region:
    """One region: its selection (any mode mask_array reads, white = edit) and what it should become."""

    mask: Image.Image
    prompt: str


def check_regions(regions: Sequence[Region], size: Tuple[int, int], limit: int = MAX_REGIONS) -> None:
    """InputError, naming the region, for a bad list: too many, a mask of another size or empty, a prompt
    that is not text. An empty prompt is allowed (that region is edited towards the background prompt)."""
    if len(regions) > limit:
        raise InputError(f"at most {limit} regions in one job, got {len(regions)}")
    for number, region in enumerate(regions, start=1):
        if not isinstance(region.prompt, str):
            raise InputError(f"region {number}: the prompt must be text, got {type(region.prompt).__name__}")
        try:
            array = imaging.mask_array(region.mask, size)
        except InputError as exc:
            raise InputError(f"region {number}: {exc}") from None
        if not array.any():
            raise InputError(f"region {number} ({region.prompt!r}): its mask is empty")


def union_mask(regions: Sequence[Region], size: Tuple[int, int]) -> Image.Image:
    """The edited area: each pixel the largest of the regions' mask values (mode L)."""
    arrays = [imaging.mask_array(region.mask, size) for region in regions]
    return Image.fromarray(np.maximum.reduce(arrays))


def model_crops(regions: Sequence[Region], size: Tuple[int, int], box: imaging.Box, side: int) -> np.ndarray:
    """Each region's soft mask over the context box at the model's side: float [K, side, side] in [0, 1]."""
    crops = []
    for region in regions:
        crop = imaging.crop_array(imaging.mask_array(region.mask, size), box).astype(np.float32) / 255.0
        resized = Image.fromarray(crop).resize((side, side), Image.Resampling.BOX)
        crops.append(np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0))
    return np.stack(crops)


def region_masks(regions: Sequence[Region], prepared: Any) -> torch.Tensor:
    """Each region's binary mask on the prepared job's model square [K, 1, S, S]: 1 where it has any value
    (as imaging.binary_model_mask makes the job's own)."""
    crops = model_crops(regions, prepared.source.size, prepared.box, prepared.size)
    return torch.from_numpy((crops > 1e-6).astype(np.float32))[:, None].to(prepared.model_mask.device)


def region_weights(crops: np.ndarray, side: int, device) -> torch.Tensor:
    """The prompts' shares of each cell of a ``side`` grid [K + 1, 1, side, side], background first: the
    regions by their mask values, divided by their sum where they overlap beyond 1; the background gets
    what is left (1 - the sum, at least 0). Every cell's shares add up to 1."""
    masks = torch.from_numpy(crops)[:, None].to(device)
    if masks.shape[-1] != side:
        masks = torch.nn.functional.interpolate(masks, size=(side, side), mode="area")
    total = masks.sum(0, keepdim=True)
    masks = masks / total.clamp(min=1.0)
    background = (1 - masks.sum(0, keepdim=True)).clamp(min=0.0)
    weights = torch.cat([background, masks])
    return weights / weights.sum(0, keepdim=True)


def without_detail(params: EditParams, notes: List[str]) -> EditParams:
    """A regions job's params: the full-resolution detail stage is not run for regions yet (it re-samples
    with one prompt), said in the notes when it was asked for."""
    if params.detail == "off":
        return params
    notes.append("full-resolution detail: not run, regions are edited at the model's size only")
    return dataclasses.replace(params, detail="off")


def prompts_of(regions: Sequence[Region]) -> List[str]:
    return [region.prompt.strip() for region in regions]
