"""``latent_edit()``: ``edit()`` for a preset whose method is ``latent``, the same stages around another loop:

  prepare   (prepare.py)  the context square at the model's size, the binary mask (as the paper's method)
  diffuse   (blended_latent.py) every candidate through Blended Latent Diffusion, in batches of
                          batch_size (split further on out-of-memory by the job's runner, running.JobRun)
  decode                  the VAE's decoder, or a copy fine-tuned per candidate (background reconstruction)
  rank      (ranking.py)  the preset's ranking CLIP on each result composited at the model's size
  composite (results.py)  each result resized into the box and blended with the SOFT mask: where the mask
                          is 0 the output is the source, byte for byte

Same EditParams, EditResult and Candidate as the paper's method, so the CLI and the bridge need no change.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import torch
from PIL import Image

from engine.editing.latent import blended_latent as bld
from engine.editing.latent.change_map import StepMasks, change_on_grid, is_binary
from engine.editing.latent.detail import latent_detail
from engine.editing.latent.regional import RegionalPrompts, regional_attention, regional_conditionings
from engine.editing.latent.seam import fix_seam, reads_reconstruction
from engine.editing.shared import imaging
from engine.editing.shared.detail_plan import DetailPlan, plan_detail, stage_costs
from engine.editing.shared.params import LATENT_SEAM_FIX, EditParams, validate_params
from engine.editing.shared.prepare import PreparedEdit, prepare_edit, to_pil
from engine.editing.shared.ranking import rank_order, score_candidates, score_regions
from engine.editing.shared.regions import Region, model_crops, prompts_of, region_masks, without_detail
from engine.editing.shared.results import EditResult, composite
from engine.editing.shared.running import (
    JobRun,
    Progress,
    ProgressCounter,
    UNetChoice,
    candidate_seeds,
    composited,
)
from engine.editing.timing import has_step_times
from engine.errors import InputError
from engine.models.devices import amp_dtype_for, free_memory


def schedule(params: EditParams, min_steps: int = 0) -> tuple:
    """(DDIM steps, steps skipped) from timestep_respacing ("50" or "ddim50") and skip_timesteps. With a
    floor of ``min_steps`` (a few-step preset's): where fewer would run, the schedule grows to
    ceil(min_steps / strength) steps of which min_steps run, so the strength keeps its meaning (issue 38)."""
    text = str(params.timestep_respacing).strip().lower()
    text = text[4:] if text.startswith("ddim") else text
    if not text.isdigit() or int(text) < 1:
        raise InputError(
            f"timestep_respacing must be a DDIM step count such as 50 for a latent preset, got "
            f"{params.timestep_respacing!r}"
        )
    steps, skip = int(text), int(params.skip_timesteps)
    if not 0 <= skip < steps:
        raise InputError(f"skip_timesteps must be between 0 and {steps - 1} for {steps} steps, got {skip}")
    if steps - skip < min_steps:
        total = -(-min_steps * steps // (steps - skip))  # ceil(min_steps / strength), in whole numbers
        return total, total - min_steps
    return steps, skip


def floor_note(models, params: EditParams) -> Optional[str]:
    """The note of a schedule the preset's floor of free steps grew, None when it did not."""
    floor = int(getattr(models, "min_steps", 0))
    asked, grown = schedule(params), schedule(params, floor)
    if asked == grown:
        return None
    return (
        f"{asked[0] - asked[1]} of {asked[0]} steps grew to {grown[0] - grown[1]} of {grown[0]}: the preset "
        f"runs at least {floor} at any strength (strength {1 - grown[1] / grown[0]:.2f} for "
        f"{1 - asked[1] / asked[0]:.2f})"
    )


def sampler_name(models) -> str:
    """How a note names the preset's steps: DDIM, or LCM for a latent consistency model."""
    return str(getattr(models, "sampler", "ddim")).upper()


def guidance_scale(models, params: EditParams) -> float:
    """The job's classifier-free guidance: the preset's unless the job sets one."""
    return float(models.guidance_scale if params.guidance_scale is None else params.guidance_scale)


@dataclass
class LatentInputs:
    """What the latent loop edits: one row for every seed, or one row shared by all (an edit's source)."""

    source: torch.Tensor  # the background's scaled latents
    masks: Any  # the phases' masks on the latent grid (bld.shrinking_masks), or a StepMasks
    cond: Any  # the prompt's conditioning, None for the unconditional prediction only
    uncond: Any
    background: torch.Tensor  # [-1, 1] at the model's size: what background reconstruction fits to
    model_mask: torch.Tensor  # the binary mask at the model's size
    init: Optional[torch.Tensor] = None  # a scribble's latents to start from


def sample(
    models,
    params: EditParams,
    inputs: LatentInputs,
    seeds: List[int],
    on_step: Optional[Callable[[bld.LatentStep], None]] = None,
    unet=None,
) -> torch.Tensor:
    """The candidates of ``seeds`` decoded to [-1, 1] at the model's size: the latent loop, the decoder (or
    a copy fine-tuned per candidate to the background outside the mask). ``unet``: the preset's unless
    the caller runs another wrapper of it."""
    num_steps, skip = schedule(params, getattr(models, "min_steps", 0))
    latents = bld.blended_latent_diffusion(
        models.unet if unet is None else unet,
        models.scheduler(),
        inputs.source,
        inputs.masks,
        seeds,
        num_steps=num_steps,
        skip=skip,
        cond=inputs.cond,
        uncond=inputs.uncond,
        guidance_scale=guidance_scale(models, params),
        init=inputs.init,
        on_step=on_step,
    )
    decoded = bld.decode(models.vae, latents)
    if params.background_reconstruction:
        background = inputs.background
        shared = background.shape[0] == 1
        decoded = torch.cat(
            [
                bld.reconstruct_background(
                    models.vae,
                    latents[i : i + 1],
                    decoded[i : i + 1],
                    background if shared else background[i : i + 1],
                    inputs.model_mask,
                )
                for i in range(len(seeds))
            ]
        )
    return decoded.clamp(-1, 1)


def unet_autocast(models, params: EditParams, notes: Optional[List[str]] = None) -> Optional[torch.dtype]:
    """The latent UNet's autocast: on a CPU, where the weights load in fp32, the job's precision
    (devices.amp_dtype_for: auto is bf16 where the CPU has it natively); none on a GPU, where the weights
    are already in the preset's dtype."""
    if models.device.type != "cpu" or models.dtype != torch.float32:
        return None
    dtype = amp_dtype_for(params.precision, models.device)
    if dtype is not None and notes is not None:
        notes.append(f"the UNet ran under {str(dtype).replace('torch.', '')} autocast (the VAE in float32)")
    return dtype


def _ignored(params: EditParams, notes: List[str]) -> None:
    """Say which of the paper method's levers this loop has no use for, when they were asked for."""
    if params.background_preservation_loss or params.local_clip_guided_diffusion:
        notes.append("the Algorithm 1 losses are the paper method's: not used for a latent preset")


def latent_edit(
    image: Image.Image,
    mask: Image.Image,
    models,
    params: EditParams,
    init_image: Optional[Image.Image] = None,
    progress: Optional[Callable[[Progress], None]] = None,
    cancel: Optional[threading.Event] = None,
    timer: Optional[Any] = None,
    regions: Optional[Sequence[Region]] = None,
) -> EditResult:
    """Run one editing job on latent models (engine.models.latent.LatentModels). Raises InputError for bad
    input, Cancelled when ``cancel`` is set. ``regions``: two or more (editor.edit checks them and makes
    ``mask`` their union), each region's prompt in its own cross-attention area (latent/regional.py)."""
    if timer is not None:
        timer.begin()
    validate_params(params)
    num_steps, skip = schedule(params, getattr(models, "min_steps", 0))
    prepared = prepare_edit(image, mask, models, params, init_image)
    notes = prepared.notes
    grown = floor_note(models, params)
    if grown is not None:
        notes.append(grown)
    _ignored(params, notes)
    prompt = params.prompt.strip()
    scale = guidance_scale(models, params)
    inputs = _inputs(models, prepared, prompt if scale != 0 else "", init_image is not None)
    inputs.masks = step_masks(prepared, params, inputs.masks[-1])
    regional = None
    if regions:
        params = without_detail(params, notes)
        regional = _regional(models, prepared, inputs, regions, prompt, scale)
    if not inputs.masks.final.any():
        notes.append("the selection is thinner than the latent grid: only progressive shrinking edits it")
    seam = LATENT_SEAM_FIX if params.seam_fix == "auto" else params.seam_fix
    seeds = candidate_seeds(params)
    autocast = unet_autocast(models, params)
    notes.append(
        f"Blended Latent Diffusion: {num_steps - skip} of {num_steps} {sampler_name(models)} steps, "
        f"guidance {scale:g}"
        + (f", the UNet under {str(autocast).replace('torch.', '')} autocast" if autocast else "")
        + (", progressive mask shrinking" if params.mask_shrink else "")
        + (", background reconstruction" if params.background_reconstruction else "")
        + (", the soft selection as per-pixel strength" if inputs.masks.change is not None else "")
        + (f", seam fix {seam}" if seam != "off" else "")
    )
    eager = dataclasses.replace(params, compile=False)  # see LatentWindows
    unet = UNetChoice(models, eager, notes, autocast=autocast)
    first_pass = (num_steps - skip) * len(seeds)
    detail_plan = plan_latent_detail(params, prepared, len(seeds), num_steps, first_pass, timer)
    counter = ProgressCounter(progress, first_pass + detail_plan.work)
    job = JobRun(models, params, notes, unet, None, counter, cancel=cancel, timer=timer)
    background, model_mask = prepared.background, prepared.model_mask

    def run(unet, batch_seeds: List[int], offset: int) -> torch.Tensor:
        def on_step(info: bld.LatentStep) -> None:
            job.step_done(inputs.cond is not None, info.batch)

            def preview() -> torch.Tensor:  # the first candidate decoded: only when a preview is due
                return composited(background, model_mask, bld.decode(models.vae, info.latents[:1])[0])

            step = offset * (num_steps - skip) + info.step * info.batch
            job.report(step, offset, at=(info.step, info.total), preview=preview)

        if timer is not None:
            timer.start()
        return sample(models, params, inputs, list(batch_seeds), on_step=on_step, unet=unet)

    with regional_attention(models.unet, regional):
        decoded = job.guarded(lambda: job.run_batches(run, seeds, int(params.batch_size)))
    if seam != "off":  # latent/seam.py: the VAE's redraw of the kept background, mended inside the selection
        needed = reads_reconstruction(seam)  # the others read the source alone
        reconstruction = bld.decode(models.vae, inputs.source).clamp(-1, 1) if needed else None
        decoded = fix_seam(seam, decoded.to(models.device), reconstruction, background, model_mask)
    if timer is not None:
        timer.end_steps(len(seeds))
    results = background * (1 - model_mask) + decoded.to(models.device) * model_mask  # what the ranking sees
    if regions:
        scores = _region_scores(models, prepared, regions, results)
    else:
        ranker = models.clip if prompt else None
        text_embed = ranker.encode_text([prompt]) if ranker is not None else None
        scores = score_candidates(ranker, results, model_mask, text_embed)
    order = rank_order(scores)
    w, h = prepared.box[2:]
    crops = [imaging.resize_image(to_pil(results[index]), (w, h)) for index in order]
    if detail_plan.on:  # latent/detail.py: the document's resolution over native-size latent tiles
        if timer is not None:
            timer.begin_detail()
        ranked = [seeds[index] for index in order]
        settings = dict(num_steps=num_steps, uncond=inputs.uncond, seam=seam)
        crops = job.guarded(lambda: latent_detail(job, prepared, detail_plan, crops, ranked, **settings))
        if timer is not None:
            timer.end_detail()
    candidates = composite(
        prepared.source,
        prepared.soft_mask,
        prepared.box,
        crops,
        [seeds[index] for index in order],
        [scores[index] for index in order],
    )
    free_memory()
    return EditResult(candidates=candidates, box=prepared.box, notes=notes)


def plan_latent_detail(
    params: EditParams, prepared: PreparedEdit, candidates: int, num_steps: int, first_pass: int, timer
) -> DetailPlan:
    """The detail stage's plan (shared/detail_plan.py, its note added): ``auto`` by this device's stored
    step times, else by UNet forwards (the first pass's ``first_pass`` guided steps, two forwards each)."""
    store = getattr(timer, "store", None)
    times = store.get(timer.key) if store is not None else {}
    guided = bool(params.prompt.strip())
    first_seconds, tile_seconds = stage_costs(params, times, guided, num_steps)
    if not has_step_times(times):
        first_seconds, tile_seconds = first_pass * (2.0 if guided else 1.0), 1.0
    plan = plan_detail(params, prepared, candidates, first_seconds, tile_seconds, total_steps=num_steps)
    if plan.on and min(prepared.box[2:]) < prepared.size:  # a stretched region: narrower than one tile
        plan = DetailPlan(False, note="full-resolution detail: not run, the region is narrower than a tile")
    plan.progress_base = first_pass
    if plan.note:
        prepared.notes.append(plan.note)
    return plan


def _regional(models, prepared: PreparedEdit, inputs: LatentInputs, regions, background: str, scale: float):
    """The regions' attention masks (latent/regional.py), with their side-by-side conditionings put into
    ``inputs``; None (and no guidance) when no prompt guides the job."""
    prompts = prompts_of(regions)
    named = ", ".join(repr(p) if p else "(no prompt)" for p in prompts)
    prepared.notes.append(
        f"{len(regions)} regions in one UNet pass a step, each prompt in its own area: {named}"
    )
    if scale == 0 or not (background or any(prompts)):
        return None
    # _inputs encoded "" and the background prompt (its cond: None when empty) already
    inputs.cond, inputs.uncond = regional_conditionings(models, prompts, inputs.uncond, inputs.cond)
    grid = inputs.source.shape[-1]
    crops = model_crops(regions, prepared.source.size, prepared.box, grid)
    tokens = inputs.cond.states.shape[1] // (len(regions) + 1)
    return RegionalPrompts(crops, grid, tokens, models.device)


def _region_scores(models, prepared: PreparedEdit, regions, results: torch.Tensor) -> List[dict]:
    """Every candidate scored by each region's masked and full distances to its own prompt, averaged."""
    prompts = prompts_of(regions)
    masks = region_masks(regions, prepared)
    embeds = [models.clip.encode_text([p]) if p else None for p in prompts]
    return score_regions(models.clip, results, masks, embeds)


def step_masks(prepared: PreparedEdit, params: EditParams, grid: torch.Tensor) -> StepMasks:
    """The loop's masks: a hard selection's phases (progressive shrinking) on ``grid``, the binary mask on
    the latent grid; a soft one's values as Differential Diffusion's change map unless ``differential`` is
    off (then binarised, as before issue 37)."""
    shrink = bool(params.mask_shrink)
    crop = imaging.crop_array(prepared.soft_mask, prepared.box)
    if not params.differential or is_binary(crop):
        return StepMasks(bld.shrinking_masks(grid, shrink))
    change = change_on_grid(crop, grid.shape[-1], grid.device)
    return StepMasks([(change > 0).float()], change=change, shrink=shrink)


def _inputs(models, prepared: PreparedEdit, prompt: str, scribbled: bool) -> LatentInputs:
    """The edit's latents, its mask on the latent grid (one phase: shrinking comes after) and the prompt's
    conditioning (none for an empty prompt or a guidance scale of 0)."""
    vae = models.vae
    source = bld.encode(vae, prepared.background)
    init = bld.encode(vae, prepared.init) if scribbled else None
    grid = bld.latent_mask(prepared.model_mask, source.shape[-1])
    uncond = models.encode_prompt("")
    cond = models.encode_prompt(prompt) if prompt else None
    return LatentInputs(
        source,
        [grid],
        cond,
        uncond,
        background=prepared.background,
        model_mask=prepared.model_mask,
        init=init,
    )
