"""The detail stage's plan, for either method: whether it runs, on which tiles, and what it costs.

The stage (engine/editing/paper/detail.py for the paper's method, engine/editing/latent/detail.py for a
latent preset) re-samples each ranked candidate at the document's resolution over tiles of the model's size
(in pixels; a latent preset's tiles are its native latent size, the same pixels). Both count their work in
tile-steps, plan it here before the first pass (the progress total, ``auto``'s decision, admission and the
CLI's estimate), and take ``detail_strength`` of the first pass's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from bridge.geometry import TILE_OVERLAP, tile_starts
from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams
from engine.editing.shared.prepare import PreparedEdit

MIN_SCALE = 1.25  # below it the resize loses little: no stage (docs/detail.md)
OVERLAP = TILE_OVERLAP  # of the tile's side (bridge/geometry.py: the plugin counts the same tiles)


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


def box_tensor(array: np.ndarray, device):
    """An (H, W, 3) float array as the stages' [1, 3, H, W] tensor on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).to(device)


def detail_steps(total: int, strength: float) -> int:
    """The stage's steps: ``strength`` of the first pass's schedule of ``total`` steps, at least one."""
    return max(1, min(int(total), round(float(strength) * int(total))))


def plan_detail(
    params: EditParams,
    prepared: PreparedEdit,
    candidates: int,
    first_pass_seconds: Optional[float],
    seconds_per_tile_step: Optional[float],
    total_steps: Optional[int] = None,
) -> DetailPlan:
    """Whether the stage runs (``params.detail``: on, off, auto) and on which tiles, with the note saying
    why. ``auto`` runs it when its estimate is below the first pass's (both in seconds, or both in UNet
    forwards before this device measured them). ``total_steps``: the first pass's schedule (default: the
    paper method's respaced diffusion's)."""
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
    total = prepared.diffusion.num_timesteps if total_steps is None else total_steps
    steps = detail_steps(total, params.detail_strength)
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
    steps = detail_steps(respaced_steps(params.timestep_respacing, diffusion_steps), params.detail_strength)
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


__all__ = [
    "MIN_SCALE",
    "box_tensor",
    "OVERLAP",
    "DetailPlan",
    "PlannedWork",
    "detail_steps",
    "mask_tiles",
    "plan_detail",
    "planned_seconds",
    "planned_work",
    "stage_costs",
    "tile_starts",
    "tile_weight",
    "work_seconds",
]
