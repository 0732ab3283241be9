"""Regions for the paper's method (issue 39): one diffusion, Algorithm 2's CLIP loss summed over the regions:

  loss_k = lambda_clip * D_CLIP(augment(crop_k(x_in * m_k)), prompt_k)
  g      = -sum_k m_k * d loss_k / d x_t  -  d (lambda_range * range(pred_x0)) / d x_t
  x_{t-1} = x_fg * m + x_bg * (1 - m),  m the union of the m_k

Each region's gradient is masked to its region (one backward pass through the UNet each, blended.py's
ClipGuidance._regions_predict): a single backward of the summed loss lets one region's prompt redraw the
others through the UNet (held out: both regions' colours in 57.9 % of candidates that way, 82.9 % masked,
docs/regions.md). With the gradient on the clean estimate (guidance_grad x0) a region's loss touches only
its own pixels already: one backward serves all.

crop_k is the square a single-selection edit of region k would show CLIP (its context square, at least the
model's size), cut from the regions' model square: CLIP sees each region alone, framed as it would see it
edited on its own; a region without a prompt adds no loss.
The ranking scores every candidate by each region's masked and full distances to its own prompt, averaged
(ranking.score_regions). The background prompt has no area of its own here: the regions are the edited area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from engine.editing.shared import imaging
from engine.editing.shared.ranking import score_regions
from engine.editing.shared.regions import Region, prompts_of, region_masks

Square = Tuple[int, int, int]  # top, left, side on the model's square


@dataclass
class RegionTargets:
    """Each region's prompt, binary mask on the model's square [K, 1, S, S] and the square CLIP sees."""

    prompts: List[str]
    masks: torch.Tensor
    squares: List[Square]
    embeds: List[Optional[torch.Tensor]] = field(default_factory=list)

    def embed(self, clip, notes: List[str]) -> Optional[torch.Tensor]:
        """Encode the prompts (the regions' embeddings, kept); the first one, or None when none has a prompt
        (then nothing is guided). Adds the job's note."""
        self.embeds = [clip.encode_text([p]) if p else None for p in self.prompts]
        named = ", ".join(repr(p) if p else "(no prompt)" for p in self.prompts)
        notes.append(f"{len(self.prompts)} regions, one diffusion, the CLIP loss summed over them: {named}")
        return next((e for e in self.embeds if e is not None), None)

    def guided(self) -> List[Tuple[torch.Tensor, torch.Tensor, Square]]:
        """(embedding, mask [1, 1, S, S], square) of each region with a prompt."""
        return [
            (e, self.masks[k : k + 1], self.squares[k]) for k, e in enumerate(self.embeds) if e is not None
        ]

    def scores(self, clip, results: torch.Tensor) -> List[dict]:
        return score_regions(clip, results, self.masks, self.embeds if clip is not None else [])


def single_edit_square(mask: np.ndarray, box: Tuple[int, int, int, int], side: int) -> Square:
    """The square a single-selection edit of this region would show CLIP (imaging.choose_box: its context
    square, at least the model's size), on the regions' model square of ``box`` (clamped to it)."""
    x, y, w, h = imaging.choose_box(mask, side)
    bx, by, bw, bh = box
    sx, sy = side / bw, side / bh
    extent = max(1, min(side, round(max(w * sx, h * sy))))
    centre_x, centre_y = (x - bx + w / 2) * sx, (y - by + h / 2) * sy
    top = int(min(max(0, round(centre_y - extent / 2)), side - extent))
    left = int(min(max(0, round(centre_x - extent / 2)), side - extent))
    return top, left, extent


def region_targets(prepared: Any, regions: Sequence[Region]) -> RegionTargets:
    """The regions on the prepared job's model square."""
    size, side = prepared.source.size, prepared.size
    masks = region_masks(regions, prepared)
    squares = [single_edit_square(imaging.mask_array(r.mask, size), prepared.box, side) for r in regions]
    return RegionTargets(prompts_of(regions), masks, squares)
