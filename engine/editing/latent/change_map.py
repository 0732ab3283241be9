"""Differential Diffusion (Levin & Fried, "Differential Diffusion: Giving Each Pixel Its Strength") on the
latent grid: a soft selection's values are each latent cell's strength.

  change  = the selection's values on the latent grid, 0..1 (1 = change fully)
  at step i of the N steps left after the strength cut:
      threshold_i = 1 - i / N                              falls from 1 to 1/N
      free_i      = change >= threshold_i                  a cell of value m runs free for its last ~m*N steps
      blend       = z * free_i + (source noised to t_{i+1}) * (1 - free_i)

(the authors' ``diff_pipe.py`` keeps a cell while ``map > i / N`` with map = 1 - change; ComfyUI's node uses
this sign.) A binary selection is free at every step where it is 1 and never where it is 0: exactly Blended
Latent Diffusion's blend, so a hard selection gives the same bytes as before. Any cell with change > 0 runs
free for at least MIN_FREE_STEPS steps (or all of them when fewer remain): with N steps there are only N
chances to blend, and a faint stroke should still be redrawn, if only a little.

The phases of progressive mask shrinking (latent/blended_latent.py) dilate each step's free cells as they
dilate the hard mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from engine.editing.latent.blended_latent import phase_mask, shrinking_masks

MIN_FREE_STEPS = 3


def is_binary(mask_crop: np.ndarray) -> bool:
    """True when the selection has only the values 0 and 255 (Krita's hard selections)."""
    return bool(np.isin(mask_crop, (0, 255)).all())


def change_on_grid(mask_crop: np.ndarray, size, device) -> torch.Tensor:
    """The soft selection's crop (uint8, 255 = change) averaged onto the latent grid (``size``: its side, or
    (height, width)): [1, 1, h, w] in 0..1. A cell is > 0 exactly where any of its pixels is selected, as
    the binary mask's."""
    height, width = (size, size) if isinstance(size, int) else size
    values = Image.fromarray(mask_crop.astype(np.float32) / 255.0, "F")
    cells = values.resize((int(width), int(height)), Image.Resampling.BOX)
    change = np.clip(np.asarray(cells, np.float32), 0.0, 1.0)
    return torch.from_numpy(change)[None, None].to(device)


@dataclass
class StepMasks:
    """What the latent loop blends with at each step: the phases of a hard mask, or a change map."""

    phases: Sequence[torch.Tensor]  # hard: shrinking_masks(mask); the last one is the true mask
    change: Optional[torch.Tensor] = None  # Differential Diffusion's map [1, 1, h, w], None for hard
    shrink: bool = False  # dilate each step's free cells by the phase's kernel (soft only)

    @property
    def final(self) -> torch.Tensor:
        """The cells edited at all (the true mask of the last phase, or every cell with change > 0)."""
        return self.phases[-1] if self.change is None else (self.change > 0).float()

    def at(self, index: int, steps: int) -> torch.Tensor:
        """The blend's mask after step ``index`` (0-based) of ``steps``."""
        if self.change is None:
            return phase_mask(self.phases, index, steps)
        free = free_cells(self.change, index, steps)
        return phase_mask(shrinking_masks(free, self.shrink), index, steps)


def free_cells(change: torch.Tensor, index: int, steps: int, min_free: int = MIN_FREE_STEPS) -> torch.Tensor:
    """1 where a cell runs free at step ``index`` of ``steps``, else 0 (see the module's docstring)."""
    floor = min(min_free, steps) / steps
    strength = torch.where(change > 0, change.clamp(min=floor), change)
    threshold = 1.0 - index / steps
    return (strength >= threshold - 1e-6).float()


def free_steps(change: torch.Tensor, steps: int) -> List[int]:
    """For tests and the docs: how many of ``steps`` each distinct change value runs free, ascending."""
    values = sorted({float(v) for v in change.flatten()})
    runs = []
    for value in values:
        cell = torch.tensor([[[[value]]]])
        runs.append(int(sum(free_cells(cell, i, steps).item() for i in range(steps))))
    return runs
