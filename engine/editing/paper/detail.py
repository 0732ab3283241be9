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

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from bridge.geometry import TILE_OVERLAP, tile_starts
from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams
from engine.editing.shared.prepare import PreparedEdit
from engine.editing.shared.running import BatchLimit, JobRun

MIN_SCALE = 1.25  # below it the resize loses little: no stage (docs/detail.md)
OVERLAP = TILE_OVERLAP  # of the tile's side (bridge/geometry.py: the plugin counts the same tiles)
# Tiles per batch per candidate of the job's batch_size: a tile's forward keeps no activations for a
# backward pass and runs no CLIP, so 4 tiles weigh less than one guided candidate (bench/gpu_report.py
# records both peaks); on a CPU fewer, larger forwards also cost less.
TILES_PER_CANDIDATE = 4
SEED_OFFSET = 0x5DE7A11  # a candidate's detail noise comes from its seed + this


@dataclass
class DetailPlan:
    """Where the stage runs and what it costs: known before the first pass (the progress total)."""

    on: bool
    steps: int = 0  # denoising steps per candidate
    tiles: List[Tuple[int, int]] = None  # (x, y) of each tile that touches the mask, in box coordinates
    candidates: int = 0
    note: Optional[str] = None
    progress_base: int = 0  # the work reported before the stage (the first pass's)

    @property
    def work(self) -> int:
        """Its tile-steps: the progress it reports."""
        return self.steps * len(self.tiles or []) * self.candidates if self.on else 0


def mask_tiles(binary: np.ndarray, tile: int, overlap: float = OVERLAP) -> List[Tuple[int, int]]:
    """(x, y) of the tiles over the box that hold a mask pixel: only they can change a pixel that shows."""
    height, width = binary.shape
    return [
        (x, y)
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
        if binary[y : y + tile, x : x + tile].any()
    ]


def tile_weight(tile: int, overlap: float = OVERLAP) -> np.ndarray:
    """(tile, tile) weights: 1 inside, ramping linearly down to 1 / ramp at the edges over the overlap."""
    ramp = max(1, int(tile * overlap))
    edge = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1)
    one = np.minimum(edge, ramp).astype(np.float32) / ramp
    return np.outer(one, one)


def detail_steps(diffusion, strength: float) -> int:
    return max(1, min(diffusion.num_timesteps, round(float(strength) * diffusion.num_timesteps)))


def plan_detail(
    params: EditParams,
    prepared: PreparedEdit,
    candidates: int,
    first_pass_seconds: Optional[float],
    seconds_per_tile_step: Optional[float],
) -> DetailPlan:
    """Whether the stage runs (``params.detail``: on, off, auto) and on which tiles, with the note saying
    why. ``auto`` runs it when its estimate is below the first pass's (both in seconds, or both in UNet
    forwards before this device measured them)."""
    mode = params.detail
    box, size = prepared.box, prepared.size
    if mode == "off":
        return DetailPlan(False)
    w, h = box[2:]
    scale = max(w, h) / size
    if scale <= MIN_SCALE:
        return DetailPlan(
            False,
            note=f"full-resolution detail: not needed, the region is {scale:.2f}x the model's size "
            f"(at most {MIN_SCALE}x)",
        )
    tiles = mask_tiles(imaging.crop_array(prepared.soft_mask, box) > 0, size)
    steps = detail_steps(prepared.diffusion, params.detail_strength)
    plan = DetailPlan(True, steps, tiles, candidates)
    cost = ""
    if first_pass_seconds and seconds_per_tile_step:
        share = plan.work * seconds_per_tile_step / first_pass_seconds
        cost = f", about {share:.0%} of the first pass's time"
    what = f"{len(tiles)} tiles x {steps} steps x {candidates} candidates at {w}x{h}{cost}"
    if mode == "auto" and cost and share >= 1:
        plan.on = False
        plan.note = f"full-resolution detail: off (auto: {what}; --detail on runs it anyway)"
        return plan
    how = "on (auto: " if mode == "auto" else "on ("
    plan.note = f"full-resolution detail: {how}{what}; strength {params.detail_strength:g})"
    return plan


class PlannedWork(NamedTuple):
    """What the stage will run for a mask, known before the edit: for estimates and admission."""

    tile_steps: int  # all candidates' (0: the stage will not run)
    box_pixels: int  # the box it re-samples at the document's resolution


def planned_work(
    params: EditParams, soft_mask: np.ndarray, model_size: int, diffusion_steps: int = 1000
) -> PlannedWork:
    """The stage's tile-steps and box for an edit of this mask, as plan_detail will plan them (``auto``'s
    decision needs the device's times: :func:`work_seconds`)."""
    from bridge.limits import respaced_steps

    if params.detail == "off":
        return PlannedWork(0, 0)
    box = imaging.choose_box(soft_mask, model_size)
    if max(box[2:]) / model_size <= MIN_SCALE:
        return PlannedWork(0, 0)
    total = respaced_steps(params.timestep_respacing, diffusion_steps)
    steps = max(1, min(total, round(float(params.detail_strength) * total)))
    tiles = mask_tiles(imaging.crop_array(soft_mask, box) > 0, model_size)
    candidates = int(params.batch_size) * int(params.iterations_num)
    return PlannedWork(steps * len(tiles) * candidates, box[2] * box[3])


def work_seconds(
    params: EditParams, tile_steps: int, times: Dict[str, float], diffusion_steps: int = 1000
) -> float:
    """Seconds ``tile_steps`` of the stage add by the stored times: 0 when ``auto`` would leave the stage
    off (it costs more than the first pass), or before this device measured anything."""
    from engine.editing import timing

    if not tile_steps or params.detail == "off" or not timing.has_step_times(times):
        return 0.0
    seconds = tile_steps * timing.detail_tile_seconds(times)
    if params.detail == "auto":
        first = timing.estimate_seconds(params, times, diffusion_steps, bool(params.prompt.strip()))
        if first is not None and seconds >= first:
            return 0.0
    return seconds


def planned_seconds(
    params: EditParams,
    soft_mask: np.ndarray,
    model_size: int,
    times: Dict[str, float],
    diffusion_steps: int = 1000,
) -> float:
    """Seconds the stage will add to an edit of this mask by the stored times (0 when it will not run, or
    before this device measured anything): for an estimate made before the edit (the CLI's plan line)."""
    work = planned_work(params, soft_mask, model_size, diffusion_steps)
    return work_seconds(params, work.tile_steps, times, diffusion_steps)


def _box_tensor(array: np.ndarray, device):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).to(device)


def detail(
    job: JobRun, prepared: PreparedEdit, plan: DetailPlan, crops: Sequence[Image.Image], seeds: Sequence[int]
) -> List[Image.Image]:
    """Each candidate's model-size result (``crops``, already resized into the box) re-sampled at the box's
    resolution; the crops in the same order. Raises Cancelled."""
    import torch

    device = job.models.device
    size = int(job.models.image_size)
    box, diffusion = prepared.box, prepared.diffusion
    background = _box_tensor(imaging.to_float_array(imaging.crop(prepared.source.rgb, box)), device)
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

    init = _box_tensor(imaging.to_float_array(crop), device) * mask + background * (1 - mask)
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


def stage_costs(
    params: EditParams, times: Dict[str, float], guided: bool, diffusion_steps: int = 1000
) -> Tuple[Optional[float], Optional[float]]:
    """(seconds of the whole first pass, seconds per detail tile-step) from stored step times; in UNet
    forwards (an unguided step = 1) before this device measured any."""
    from engine.editing import timing

    if not timing.has_step_times(times):
        times = {"unguided": 1.0}
    first = timing.estimate_seconds(params, times, diffusion_steps, guided)
    return first, timing.detail_tile_seconds(times)


__all__: List[Any] = [
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
