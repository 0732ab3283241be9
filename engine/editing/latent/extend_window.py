"""``extend()`` on a preset whose method is ``latent``: each window through Blended Latent Diffusion.

extend.py plans the windows, composites each result with the window's soft mask and ranks the canvases as
for the paper's method; this module only replaces the per-window diffusion call:

    background (the candidates' canvases cropped to the window, at the model's size)
      -> VAE latents, one per candidate (the canvases differ after the first window)
      -> blended_latent_diffusion with the window's binary mask on the latent grid and the side's prompt
      -> decoded [-1, 1] images at the model's size

The schedule, guidance scale, mask shrinking and background reconstruction are read as latent_edit.py
reads them, so an extension and an edit on the same preset share their settings.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from engine.editing.latent import blended_latent as bld
from engine.editing.latent.edit import (
    LatentInputs,
    guidance_scale,
    sample,
    sampler_name,
    schedule,
    unet_autocast,
)
from engine.editing.shared.params import EditParams
from engine.editing.shared.running import UNetChoice


class LatentWindows:
    """The per-window sampler of an extension on latent models (engine.models.latent.LatentModels)."""

    def __init__(self, models, params: EditParams, prompts: Iterable[str], notes: List[str]) -> None:
        self.models, self.params = models, params
        self.num_steps, self.skip = schedule(
            params, getattr(models, "min_steps", 0)
        )  # InputError before any model call
        self.steps = self.num_steps - self.skip  # steps each window runs: what progress counts
        self.scale = guidance_scale(models, params)
        texts = sorted({text for text in prompts if text})
        self.uncond = models.encode_prompt("")
        # each side's conditioning once per job, not once per window
        self.conds: Dict[str, object] = {t: models.encode_prompt(t) for t in texts if self.scale != 0}
        # the ranking CLIP's embedding of each prompt (extend._score); none without a ranking CLIP
        clip = models.clip
        self.embeds: Dict[str, torch.Tensor] = {t: clip.encode_text([t]) for t in texts if clip is not None}
        # the paper's UNet wrapper, never compiled here: the compile path calls the ADM UNet's signature
        eager = dataclasses.replace(params, compile=False)
        self.unet_choice = UNetChoice(models, eager, notes, autocast=unet_autocast(models, params, notes))
        if params.compile:
            notes.append("torch.compile is used for the paper's UNet only: the latent UNet ran eagerly")
        if params.background_preservation_loss or params.local_clip_guided_diffusion:
            notes.append("the Algorithm 1 losses are the paper method's: not used for a latent preset")
        notes.append(
            f"Blended Latent Diffusion per window: {self.steps} of {self.num_steps} {sampler_name(models)} "
            f"steps, guidance {self.scale:g}"
            + (", progressive mask shrinking" if params.mask_shrink else "")
            + (", background reconstruction" if params.background_reconstruction else "")
        )

    def __call__(
        self,
        unet,
        background: torch.Tensor,
        model_mask: torch.Tensor,
        seeds: Sequence[int],
        text: str,
        on_step: Optional[Callable[[bld.LatentStep], None]] = None,
    ) -> torch.Tensor:
        """The window's results [len(seeds), 3, S, S] in [-1, 1]; ``background`` holds one image per seed."""
        source = bld.encode(self.models.vae, background)
        grid = bld.latent_mask(model_mask, source.shape[-1])
        masks = bld.shrinking_masks(grid, bool(self.params.mask_shrink))
        inputs = LatentInputs(source, masks, self.conds.get(text), self.uncond, background, model_mask)
        return sample(self.models, self.params, inputs, list(seeds), on_step=on_step, unet=unet)


__all__ = ["LatentWindows"]
