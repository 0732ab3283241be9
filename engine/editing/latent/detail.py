"""The detail stage for a latent preset: each ranked candidate, made at the model's size, re-sampled at the
document's resolution in the VAE's latent space, as the paper method's stage (engine/editing/paper/
detail.py) does in pixels. A 1,500 px selection edited by SD 1.5 at 512 px is otherwise a 3x upscale.

    up    = Lanczos(candidate, box size)                       # the model-size edit, blurred
    z_src = E(source box),  z_up = E(up inside the selection, source outside)     padded to the VAE's factor
    m_i   = the selection on the box's latent grid (a soft one: Differential Diffusion, change_map.py)
    z     = z_up noised to the first of the last detail_strength x N DDIM timesteps
    for each of those timesteps t:
        eps = sum_tiles w_tile * eps(z[tile], t, "") / sum_tiles w_tile    fused at EVERY step
        z   = DDIM step of the whole box from the fused prediction
        z   = z * m_i + (z_src noised to the next timestep, clean after the last) * (1 - m_i)
    result = D(z) cropped to the box, with the job's seam levers (seam.py)

The tiles are the model's native latent size (the same pixels as the plan's model-size tiles, shared/
detail_plan.py), overlap by a quarter and taper linearly over it; only those that touch the selection run.
The prediction is the empty prompt's alone (one UNet call a tile): the text was settled by the first pass,
and a prompted tile that sees part of the object would paint the prompt into each tile. The composite
afterwards (shared/results.py) keeps every pixel outside the selection byte for byte.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.editing.latent import blended_latent as bld
from engine.editing.latent.change_map import StepMasks, change_on_grid, is_binary
from engine.editing.latent.seam import fix_seam, reads_reconstruction
from engine.editing.shared import imaging
from engine.editing.shared.detail_plan import DetailPlan, box_tensor, tile_weight
from engine.editing.shared.prepare import PreparedEdit
from engine.editing.shared.running import BatchLimit, JobRun

TILES_PER_CANDIDATE = 4  # tiles a forward per candidate of the job's batch_size (no guidance: one call each)
SEED_OFFSET = 0x5DE7A11  # a candidate's detail noise comes from its seed + this (as the paper's stage)


def vae_factor(vae) -> int:
    """Pixels per latent cell: 2 per down block after the first (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _padded(image: torch.Tensor, factor: int) -> torch.Tensor:
    """[1, 3, H, W] padded on the right and bottom (edge pixels repeated) to multiples of ``factor``."""
    height, width = image.shape[-2:]
    pad = (0, -width % factor, 0, -height % factor)
    return F.pad(image, pad, mode="replicate") if any(pad) else image


def box_masks(crop: np.ndarray, grid: tuple, differential: bool, device) -> StepMasks:
    """The selection on the box's latent grid: binary (a cell with any selected pixel), or a soft
    selection's change map (Differential Diffusion) unless ``differential`` is off."""
    change = change_on_grid(crop, grid, device)
    if not differential or is_binary(crop):
        return StepMasks([(change > 0).float()])
    return StepMasks([(change > 0).float()], change=change)


def latent_detail(
    job: JobRun,
    prepared: PreparedEdit,
    plan: DetailPlan,
    crops: Sequence[Image.Image],
    seeds: Sequence[int],
    *,
    num_steps: int,
    uncond: Any,
    seam: str,
) -> List[Image.Image]:
    """Each candidate's result (``crops``, already resized into the box) re-sampled at the box's resolution;
    the crops in the same order. ``num_steps``: the first pass's DDIM schedule, of which the stage runs the
    last ``plan.steps``; ``uncond``: the empty prompt's conditioning; ``seam``: the job's seam levers.
    Raises Cancelled."""
    models = job.models
    vae, device, size = models.vae, models.device, int(models.image_size)
    factor = vae_factor(vae)
    tile = size // factor
    w, h = prepared.box[2:]
    background = box_tensor(imaging.to_float_array(imaging.crop(prepared.source.rgb, prepared.box)), device)
    crop_mask = imaging.crop_array(prepared.soft_mask, prepared.box)
    pixel_mask = torch.from_numpy((crop_mask > 0).astype(np.float32))[None, None].to(device)
    source = bld.encode(vae, _padded(background, factor))
    grid = tuple(source.shape[-2:])
    masks = box_masks(np.pad(crop_mask, ((0, grid[0] * factor - h), (0, grid[1] * factor - w))), grid,
                      bool(job.params.differential), device)  # fmt: skip
    tiles = [(x // factor, y // factor) for x, y in plan.tiles]
    weight = torch.from_numpy(tile_weight(tile))[None, None].to(device)
    coverage = torch.zeros((1, 1, *grid), device=device)
    for x, y in tiles:
        coverage[..., y : y + tile, x : x + tile] += weight
    coverage = coverage.clamp_min(1e-8)  # 0 only outside every tile: outside the selection, blended away
    reconstruction = None
    if reads_reconstruction(seam):  # the VAE's redraw of the source box
        reconstruction = bld.decode(vae, source)[..., :h, :w].clamp(-1, 1)
    limit = BatchLimit(int(job.params.batch_size) * TILES_PER_CANDIDATE)
    out: List[Image.Image] = []
    for index, (crop, seed) in enumerate(zip(crops, seeds)):
        start = box_tensor(imaging.to_float_array(crop), device) * pixel_mask + background * (1 - pixel_mask)
        maps = (source, masks, tiles, tile, weight, coverage)
        start_latent = bld.encode(vae, _padded(start, factor))
        z = _detail_one(job, plan, maps, start_latent, seed=seed, index=index, num_steps=num_steps,
                        uncond=uncond, limit=limit)  # fmt: skip
        decoded = bld.decode(vae, z)[..., :h, :w].clamp(-1, 1)
        if seam != "off":
            decoded = fix_seam(seam, decoded, reconstruction, background, pixel_mask)
        out.append(imaging.from_float_array(decoded[0].permute(1, 2, 0).cpu().numpy()))
    return out


def _detail_one(job: JobRun, plan: DetailPlan, maps, start, *, seed: int, index: int, num_steps: int, uncond,
                limit: BatchLimit) -> torch.Tensor:  # fmt: skip
    """One candidate's latents after the stage's steps (the module docstring's loop)."""
    source, masks, tiles, tile, weight, coverage = maps
    scheduler = job.models.scheduler()
    scheduler.set_timesteps(num_steps, device=source.device)
    timesteps = scheduler.timesteps[num_steps - plan.steps :]
    generator = torch.Generator("cpu").manual_seed((int(seed) + SEED_OFFSET) % 2**63)

    def noise() -> torch.Tensor:
        return torch.randn(tuple(source.shape), generator=generator).to(source.device)

    z = scheduler.add_noise(start, noise(), timesteps[:1])
    base = plan.progress_base + index * plan.steps * len(tiles)
    total = len(timesteps)
    for step, t in enumerate(timesteps):
        done = base + step * len(tiles)

        def run(unet, batch: Sequence[int], offset: int, z=z, t=t, done=done) -> torch.Tensor:
            job.check_cancel()
            dtype = next(unet.parameters()).dtype
            views = torch.cat([z[..., y : y + tile, x : x + tile] for x, y in (tiles[i] for i in batch)])
            with torch.no_grad():
                eps = bld.guided_eps(unet, views.to(dtype), t, None, uncond, 1.0).float()
            if job.timer is not None:
                job.timer.detail_step(len(batch))
            job.progress.report(done + offset + len(batch), index)
            return eps

        outputs = job.split(run, list(range(len(tiles))), 0, limit)
        fused = torch.zeros_like(z)
        for (x, y), eps in zip(tiles, outputs):
            fused[..., y : y + tile, x : x + tile] += eps[None] * weight
        z = scheduler.step(fused / coverage, t, z, generator=generator).prev_sample
        if step + 1 < total:
            background = scheduler.add_noise(source, noise(), timesteps[step + 1 : step + 2])
        else:
            background = source  # the last blend is clean, as the first pass's
        mask = masks.at(step, total)
        z = z * mask + background * (1 - mask)
        job.check_cancel()
    return z
