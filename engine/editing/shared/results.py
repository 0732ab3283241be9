"""The last stage of an edit: ranked candidates composited into the source with the SOFT mask.

Where the mask is 0 the output is the source, byte for byte; each candidate also has an RGBA patch (alpha
= mask) for the plugin over the part of the region the mask touches (no other pixel can change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from engine.editing.shared import imaging


class Candidate:
    """One result: ``image`` (full size, the converted source's mode, RGB or RGBA) and ``patch`` (RGBA over
    ``box``, alpha = soft mask). edit() gives ``pixels`` instead, which makes each when first asked for: a
    bridge job sends only the patch, and on a big document the full image would cost more than the rest.
    Both are then made from the source edit() was given: modifying it before reading them changes them."""

    def __init__(
        self,
        rank: int,
        seed: int,
        scores: Dict[str, Optional[float]],  # masked_clip, full_clip, combined (None without a prompt)
        image: Optional[Image.Image] = None,
        patch: Optional[Image.Image] = None,
        box: Tuple[int, int, int, int] = (0, 0, 0, 0),
        pixels: Optional[imaging.CandidatePixels] = None,
    ) -> None:
        self.rank, self.seed, self.scores = rank, seed, scores
        self._image, self._patch, self._pixels = image, patch, pixels
        self.box = tuple(pixels.box) if pixels is not None else box

    @property
    def image(self) -> Image.Image:
        if self._image is None and self._pixels is not None:
            self._image = self._pixels.image()
        return self._image

    @property
    def patch(self) -> Image.Image:
        if self._patch is None and self._pixels is not None:
            self._patch = self._pixels.patch()
        return self._patch

    def patch_rgba(self):
        """The patch as a C-ordered uint8 (h, w, 4) array (no PIL copy when edit() made it)."""
        import numpy as np

        if self._pixels is not None:
            return self._pixels.patch_rgba()
        patch = self.patch if self.patch.mode == "RGBA" else self.patch.convert("RGBA")
        return np.ascontiguousarray(np.asarray(patch))


@dataclass
class EditResult:
    candidates: List[Candidate]
    box: Tuple[int, int, int, int]
    notes: List[str] = field(default_factory=list)


def composite(
    source: imaging.Prepared,
    soft_mask,
    box: imaging.Box,
    crops: Sequence[Image.Image],
    seeds: Sequence[int],
    scores: Sequence[Dict[str, Optional[float]]],
) -> List[Candidate]:
    """The candidates in rank order (``crops``, ``seeds`` and ``scores`` are already in it): each edited
    crop (the box's size) blended into the source with the soft mask when its pixels are first asked for."""
    full_source = source.full()
    plan = imaging.plan_blend(full_source, soft_mask, box)  # not None: choose_box refused empty masks
    return [
        Candidate(rank, seed, score, pixels=imaging.CandidatePixels(plan, full_source, crop))
        for rank, (crop, seed, score) in enumerate(zip(crops, seeds, scores), start=1)
    ]
