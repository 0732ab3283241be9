"""The detail stage: each ranked candidate, made at the model's size, re-sampled at the document's resolution.

A 1500 px selection edited at 256 px and resized into its box is a 6x smear inside a sharp photograph. This
stage, run after the ranking for every candidate whose box is more than MIN_SCALE x the model's size:

    up      = Lanczos(candidate, box size)                     # the model-size edit, blurred
    x_k     = q_sample(up inside the mask, source outside, k)  # k = detail_strength x the schedule
    for t = k-1 ... 0:
        eps     = sum_tiles w_tile * UNet(x_t[tile], t) / sum_tiles w_tile   # fused at EVERY step
        x_fg    = DDPM (or DDIM) step of the whole box from the fused prediction
        x_{t-1} = x_fg * m + q_sample(source, t) * (1 - m)      # Algorithm 2's blend, at full resolution
    result  = source * (1 - m) + pred_x0 * m

Fusing the tiles' predictions at every step (Mixture of Diffusers; with flat weights it is MultiDiffusion's
average of the tiles' x_{t-1} under one noise draw) leaves no seam to cross-fade afterwards: every pixel
has one value of x_t that all tiles covering it see. The tiles are the model's size, overlap by a quarter
of it, taper linearly over the overlap, and only those that touch the mask run. There is no CLIP guidance:
the text was settled by the first pass, and a tile that sees part of the object would paint the prompt
into each tile. The soft-mask composite afterwards (results.py) keeps every pixel outside the selection
byte for byte.

Tiles run in batches of TILES_PER_CANDIDATE x the job's batch_size (no gradient: less memory than the first
pass's batch), with
the job's out-of-memory splitting, precision and compiled UNet; progress counts tile-steps after the first
pass's candidate-steps; a cancel is seen between tile batches.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
from PIL import Image

from engine.editing.shared import imaging
from engine.editing.shared.detail_plan import (  # the plan is shared with the latent method's stage
    MIN_SCALE,
    OVERLAP,
    DetailPlan,
    PlannedWork,
    box_tensor,
    mask_tiles,
    plan_detail,
    planned_seconds,
    planned_work,
    stage_costs,
    tile_starts,
    tile_weight,
    work_seconds,
)
from engine.editing.shared.prepare import PreparedEdit
from engine.editing.shared.running import BatchLimit, JobRun

# Tiles per batch per candidate of the job's batch_size: a tile's forward keeps no activations for a
# backward pass and runs no CLIP, so 4 tiles weigh less than one guided candidate (bench/gpu_report.py
# records both peaks); on a CPU fewer, larger forwards also cost less.
TILES_PER_CANDIDATE = 4
SEED_OFFSET = 0x5DE7A11  # a candidate's detail noise comes from its seed + this


def detail(
    job: JobRun, prepared: PreparedEdit, plan: DetailPlan, crops: Sequence[Image.Image], seeds: Sequence[int]
) -> List[Image.Image]:
    """Each candidate's model-size result (``crops``, already resized into the box) re-sampled at the box's
    resolution; the crops in the same order. Raises Cancelled."""
    import torch

    device = job.models.device
    size = int(job.models.image_size)
    box, diffusion = prepared.box, prepared.diffusion
    background = box_tensor(imaging.to_float_array(imaging.crop(prepared.source.rgb, box)), device)
    binary = imaging.crop_array(prepared.soft_mask, box) > 0
    mask = torch.from_numpy(binary.astype(np.float32))[None, None].to(device)
    weight = torch.from_numpy(tile_weight(size))[None, None].to(device)
    coverage = torch.zeros_like(mask)
    for x, y in plan.tiles:
        coverage[..., y : y + size, x : x + size] += weight
    coverage = coverage.clamp_min(1e-8)  # 0 only outside every tile: outside the mask, replaced anyway
    limit = BatchLimit(int(job.params.batch_size) * TILES_PER_CANDIDATE)
    out: List[Image.Image] = []
    for index, (crop, seed) in enumerate(zip(crops, seeds)):
        maps = (background, mask, weight, coverage)
        sampled = _detail_one(job, diffusion, plan, maps, crop, seed=seed, index=index, limit=limit)
        out.append(imaging.from_float_array(sampled[0].permute(1, 2, 0).cpu().numpy()))
    return out


def _detail_one(job: JobRun, diffusion, plan: DetailPlan, maps, crop, seed: int, index: int, limit):
    import torch

    from engine.editing.paper.blended import autocast_context

    params, size, device = job.params, int(job.models.image_size), job.models.device
    background, mask, weight, coverage = maps
    base = plan.progress_base + index * plan.steps * len(plan.tiles)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(seed) + SEED_OFFSET) % 2**63)

    def noise():
        return torch.randn(background.shape, generator=generator, device=device, dtype=torch.float32)

    init = box_tensor(imaging.to_float_array(crop), device) * mask + background * (1 - mask)
    steps = list(range(plan.steps))[::-1]
    t = torch.full((1,), steps[0], device=device, dtype=torch.long)
    x = diffusion.q_sample(init, t, noise=noise())
    pred_x0 = init
    tiles = plan.tiles
    labels_needed = getattr(job.models, "class_cond", False)

    for step_number, step in enumerate(steps):
        t = torch.full((1,), step, device=device, dtype=torch.long)
        done = base + step_number * len(tiles)

        def run(unet, batch: Sequence[int], offset: int, x=x, t=t, done=done):
            job.check_cancel()
            crops_x = torch.cat([x[..., y : y + size, x0 : x0 + size] for x0, y in (tiles[i] for i in batch)])
            labels = torch.zeros(len(batch), dtype=torch.long, device=device) if labels_needed else None
            with torch.no_grad(), autocast_context(device, job.amp_dtype):
                output = unet(crops_x, diffusion.model_timesteps(t.expand(len(batch))), labels).float()
            if job.timer is not None:
                job.timer.detail_step(len(batch))
            job.progress.report(done + offset + len(batch), index)
            return output

        outputs = job.split(run, list(range(len(tiles))), 0, limit)
        fused = None
        for (x0, y), output in zip(tiles, outputs):
            if fused is None:
                fused = torch.zeros((1, output.shape[0], *x.shape[2:]), device=device)
            fused[..., y : y + size, x0 : x0 + size] += output[None] * weight
        fused = fused / coverage
        out = diffusion.p_mean_variance(None, x, t, model_output=fused)
        if params.ddim:
            stepped = diffusion.ddim_step(out, x, t)
        else:
            stepped = diffusion.ddpm_step(out, x, t, noise=noise())
        pred_x0 = stepped["pred_xstart"]
        # Algorithm 2's blend: outside the mask the source noised to this step's level, fresh noise
        x = stepped["sample"] * mask + diffusion.q_sample(background, t, noise=noise()) * (1 - mask)
        job.check_cancel()
    return (background * (1 - mask) + pred_x0 * mask).clamp(-1, 1)


__all__: List[Any] = [
    "MIN_SCALE",
    "OVERLAP",
    "TILES_PER_CANDIDATE",
    "planned_seconds",
    "tile_weight",
    "DetailPlan",
    "PlannedWork",
    "detail",
    "plan_detail",
    "planned_work",
    "work_seconds",
    "stage_costs",
    "tile_starts",
    "mask_tiles",
]
