"""Regions (issue 39) as plain data: the edited layer's selection masks, each named by its prompt, edited in
one job. The docker lists them (``RegionSpec``); ``plan_regions`` makes the job's context square around
their union, each region's mask over it and the union itself (what candidates may cover).

A mask still named as Krita names a new one ("Selection Mask", "Selection Mask 2") has no prompt of its
own: it takes the docker's prompt. Hidden masks are skipped; a layer without visible masks is edited from
the current selection, as before.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from bridge.limits import DEFAULT_LIMITS

from . import errors, pixels

Box = Tuple[int, int, int, int]  # x, y, width, height
MAX_REGIONS = DEFAULT_LIMITS.max_regions  # the bridge's (bridge/limits.py): more is refused before sending
_DEFAULT_NAME = re.compile(r"^\s*selection\s*mask(\s*\d+)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RegionSpec:
    """One selection mask of the edited layer, as the docker shows it."""

    uid: str  # the mask node's unique id, to rename it from the docker
    name: str
    visible: bool


def region_prompt(name: str, fallback: str) -> str:
    """A mask's prompt: its name, or ``fallback`` (the docker's prompt) for a name Krita gave it."""
    return fallback.strip() if _DEFAULT_NAME.match(name) else name.strip()


def used(specs: Sequence[RegionSpec]) -> List[RegionSpec]:
    """The regions an edit uses: the visible masks."""
    return [spec for spec in specs if spec.visible]


def plan_regions(
    masks: Sequence[Tuple[str, str, bytes]], width: int, height: int, context_box
) -> Tuple[Box, bytes, List[Tuple[str, bytes]]]:
    """(region, the union over it, [(prompt, mask over it)]) of the masks ``(name, prompt, bytes over the
    whole image)``. ``context_box(bbox, width, height)``: the square around the union's bounds
    (bridge.geometry). Raises a PluginError naming an empty mask or too many of them."""
    if len(masks) > MAX_REGIONS:
        raise errors.TooManyRegionsError(len(masks), MAX_REGIONS)
    bounds = []
    for name, _prompt, data in masks:
        if len(data) != width * height:
            raise ValueError(f"selection mask {name!r} has {len(data)} bytes for a {width}x{height} image")
        bbox = pixels.mask_bbox(data, width, height)
        if bbox is None:
            raise errors.EmptyRegionError(name)
        bounds.append(bbox)
    union_bbox = (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
    region = tuple(context_box(union_bbox, width, height))
    crops = [(prompt, pixels.crop(data, width, height, 1, region)) for _name, prompt, data in masks]
    union: Optional[bytes] = None
    for _prompt, crop in crops:
        union = crop if union is None else bytes(map(max, union, crop))
    return region, union or b"", crops  # type: ignore[return-value]


def label(prompts: Sequence[str]) -> str:
    """What the candidates' group and the accepted layer are named after: the regions' prompts."""
    return " | ".join(p if p else "(background)" for p in prompts)
