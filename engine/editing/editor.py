"""``edit()``: one editing job from source image and mask to ranked candidates, as its stages:

  prepare   (prepare.py)  the context square around the mask at the model's size, the mask binarised
  diffuse   (diffuse.py)  batch_size x iterations_num candidates through Algorithm 2 (blended.py)
                          (a preset whose method is "latent" runs latent_edit.py's stages instead)
  rank      (ranking.py)  CLIP scores of each candidate, best first
  detail    (detail.py)   each candidate resized into the box and, when asked for and the box is well
                          above the model's size, re-sampled there over fused tiles (full resolution)
  composite (results.py)  each result resized into the box and blended in with the SOFT mask: where the
                          mask is 0 the output is the source, byte for byte

The stages share a ``running.JobRun``: the notes, the UNet (compiled or not), the precision, the progress
counter, the cancel flag, the step timer and the out-of-memory batch splitting; the latent loop and
extend() run on the same JobRun.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

from PIL import Image

from engine.editing.paper import detail as detail_stage
from engine.editing.paper.diffuse import ModelPass, diffuse, plan_model_pass
from engine.editing.paper.regional import region_targets
from engine.editing.shared import imaging
from engine.editing.shared.params import PRECISIONS, EditParams, validate_params
from engine.editing.shared.prepare import PreparedEdit, diffusion_for, lpips_for, prepare_edit, to_pil
from engine.editing.shared.regions import (
    Region,
    check_regions,
    union_mask,
    without_detail,
)
from engine.editing.shared.results import Candidate, EditResult, composite
from engine.editing.shared.running import (
    PREVIEW_MAX_SIDE,
    BatchLimit,
    CompiledUNet,
    JobRun,
    Progress,
    ProgressCounter,
    UNetChoice,
    run_splitting_on_oom,
    set_precision,
)
from engine.errors import InputError
from engine.models.devices import amp_dtype_for, free_memory


def edit(
    image: Image.Image,
    mask: Optional[Image.Image],
    models,
    params: EditParams,
    init_image: Optional[Image.Image] = None,
    progress: Optional[Callable[[Progress], None]] = None,
    cancel: Optional[threading.Event] = None,
    timer: Optional[Any] = None,
    regions: Optional[Sequence[Region]] = None,
) -> EditResult:
    """Run one editing job. Raises InputError for bad input, Cancelled when ``cancel`` is set.

    ``params`` are used as they are: a quality mode is resolved into them before (modes.resolve_params).
    ``timer``: an engine.editing.timing.StepTimer that records this device's step times and the time around
    them; the caller saves it once the result is out (so its own PNG encoding is counted too).
    ``regions`` (issue 39, shared/regions.py): several selections with their own prompts instead of
    ``mask`` (then None); ``params.prompt`` is the background prompt. One region is a plain edit.
    """
    mask, params, regions = _selection(image, mask, params, regions)
    if models.method == "latent":  # a diffusers preset: Blended Latent Diffusion
        from engine.editing.latent.edit import latent_edit

        job = dict(init_image=init_image, progress=progress, cancel=cancel, timer=timer, regions=regions)
        return latent_edit(image, mask, models, params, **job)
    if timer is not None:
        timer.begin()
    from engine.editing.shared.augment import ExtendingAugmentations

    validate_params(params)
    prepared = prepare_edit(image, mask, models, params, init_image, guided=_guided(params, regions))
    notes = prepared.notes
    prompt = params.prompt.strip()
    targets = None
    if regions:
        targets = region_targets(prepared, regions)
        params = without_detail(params, notes)

    # before any model call: the prompt's embedding too comes from the job's precision
    amp_dtype = set_precision(models, amp_dtype_for(params.precision, models.device), notes)
    models.unet.requires_grad_(False)
    if targets is not None:  # the regions' prompts guide; the background prompt has no area here
        text_embed = targets.embed(models.clip, notes)
    else:
        text_embed = models.clip.encode_text([prompt]) if prompt else None
    guided = text_embed is not None
    augment = ExtendingAugmentations(models.clip.image_size, int(params.aug_num)) if guided else None
    unet = UNetChoice(models, params, notes)
    model_pass = plan_model_pass(params, prepared.diffusion)
    detail_plan = _plan_detail(models, params, prepared, model_pass, timer)
    counter = ProgressCounter(progress, model_pass.work + detail_plan.work)
    job = JobRun(models, params, notes, unet, amp_dtype, counter, cancel=cancel, timer=timer)

    def stages() -> Tuple[List[Image.Image], List[int], List[dict]]:
        results, seeds = diffuse(job, prepared, model_pass, text_embed, augment, targets)
        if timer is not None:
            timer.end_steps(len(seeds))
        crops, seeds, scores = _rank(job, prepared, results, seeds, text_embed, targets)
        del results
        if detail_plan.on:
            if timer is not None:
                timer.begin_detail()
            crops = detail_stage.detail(job, prepared, detail_plan, crops, seeds)
            if timer is not None:
                timer.end_detail()
        return crops, seeds, scores

    crops, seeds, scores = job.guarded(stages)
    candidates = composite(prepared.source, prepared.soft_mask, prepared.box, crops, seeds, scores)
    free_memory()
    return EditResult(candidates=candidates, box=prepared.box, notes=notes)


def _plan_detail(models, params: EditParams, prepared: PreparedEdit, model_pass: ModelPass, timer):
    """The detail stage's plan (its note added), by this device's stored step times for ``auto``."""
    store = getattr(timer, "store", None)  # a StepTimer's, for the auto decision
    times = store.get(timer.key) if store is not None else {}
    guided = bool(params.prompt.strip())
    diffusion_steps = int(models.diffusion_flags.get("diffusion_steps", 1000))
    first_seconds, tile_seconds = detail_stage.stage_costs(params, times, guided, diffusion_steps)
    candidates = len(model_pass.seeds)
    plan = detail_stage.plan_detail(params, prepared, candidates, first_seconds, tile_seconds)
    plan.progress_base = model_pass.work
    if plan.note:
        prepared.notes.append(plan.note)
    return plan


def _guided(params: EditParams, regions: Optional[Sequence[Region]]) -> bool:
    """The job is guided: its prompt, or one of its regions', is not empty."""
    return bool(params.prompt.strip()) if not regions else any(r.prompt.strip() for r in regions)


def _selection(image: Image.Image, mask, params: EditParams, regions: Optional[Sequence[Region]]):
    """(mask, params, regions) of the job: one region is a plain edit of its mask and prompt (regions
    None); several are edited within their union, checked first (InputError)."""
    if not regions:
        if mask is None:
            raise InputError("an edit needs a mask or regions")
        return mask, params, None
    if mask is not None:
        raise InputError("give an edit either a mask or regions, not both: the regions' union is the mask")
    if params.invert_mask:
        raise InputError("invert_mask does not apply to regions: each region's mask says what it edits")
    check_regions(regions, image.size)
    if len(regions) == 1:
        return regions[0].mask, dataclasses.replace(params, prompt=regions[0].prompt), None
    return union_mask(regions, image.size), params, list(regions)


def _rank(job: JobRun, prepared: PreparedEdit, results, seeds: Sequence[int], text_embed, targets=None):
    """(crops resized into the box, seeds, scores), best first by the CLIP ranking (with regions: by
    every region's score, paper/regional.py)."""
    from engine.editing.shared.ranking import rank_order, score_candidates

    clip = job.models.clip if text_embed is not None else None
    if targets is not None:
        scores = targets.scores(clip, results)
    else:
        scores = score_candidates(clip, results, prepared.model_mask, text_embed)
    order = rank_order(scores)
    w, h = prepared.box[2:]
    crops = [imaging.resize_image(to_pil(results[index]), (w, h)) for index in order]
    return crops, [seeds[index] for index in order], [scores[index] for index in order]


__all__ = [
    "PRECISIONS",
    "PREVIEW_MAX_SIDE",
    "BatchLimit",
    "Candidate",
    "CompiledUNet",
    "EditParams",
    "EditResult",
    "Progress",
    "UNetChoice",
    "diffusion_for",
    "edit",
    "lpips_for",
    "run_splitting_on_oom",
    "validate_params",
]
