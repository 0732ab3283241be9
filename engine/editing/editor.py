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
counter, the cancel flag, the step timer, and this module's out-of-memory policy (run_splitting_on_oom).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional, Sequence

from PIL import Image

from engine.editing.paper import detail as detail_stage
from engine.editing.paper.diffuse import diffuse, plan_model_pass
from engine.editing.shared import imaging
from engine.editing.shared.params import PRECISIONS, EditParams, validate_params
from engine.editing.shared.prepare import diffusion_for, lpips_for, prepare_edit, to_pil
from engine.editing.shared.results import Candidate, EditResult, composite
from engine.editing.shared.running import (
    PREVIEW_MAX_SIDE,
    BatchLimit,
    CompiledUNet,
    JobRun,
    Progress,
    ProgressCounter,
    UNetChoice,
    set_precision,
)
from engine.errors import Cancelled, EngineError
from engine.models.devices import amp_dtype_for, free_memory, is_out_of_memory


def run_splitting_on_oom(
    run: Callable[[Sequence[int], int], Any],
    seeds: Sequence[int],
    offset: int,
    notes: List[str],
    limit: Optional[BatchLimit] = None,
):
    """run(seeds, offset) -> tensor [len(seeds), ...], in batches of at most ``limit.size``; on
    out-of-memory the limit is halved (for this call and every later one sharing ``limit``) and the
    failed batch is run again in smaller ones.

    Each candidate's randomness comes from its own seed, so a split batch makes the same candidates.
    """
    import torch

    limit = limit if limit is not None else BatchLimit(len(seeds))
    outputs = []
    done = 0
    while done < len(seeds):
        batch = seeds[done : done + limit.size]
        try:
            outputs.append(run(batch, offset + done))
            done += len(batch)
            continue
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not is_out_of_memory(exc):
                raise
            if len(batch) == 1:
                raise EngineError(
                    "out of memory even for a single candidate: use a smaller model preset, another device "
                    "(--device cpu) or close other programs using the GPU"
                ) from None
        # out of the except block: the failed batch's tensors (held by the traceback) are gone now
        free_memory()
        limit.size = len(batch) // 2
        notes.append(
            f"out of memory with {len(batch)} candidates at once: the rest of the job ran in batches of "
            f"{limit.size}"
        )
    return torch.cat(outputs, dim=0)


def edit(
    image: Image.Image,
    mask: Image.Image,
    models,
    params: EditParams,
    init_image: Optional[Image.Image] = None,
    progress: Optional[Callable[[Progress], None]] = None,
    cancel: Optional[threading.Event] = None,
    timer: Optional[Any] = None,
) -> EditResult:
    """Run one editing job. Raises InputError for bad input, Cancelled when ``cancel`` is set.

    ``params`` are used as they are: a quality mode is resolved into them before (modes.resolve_params).
    ``timer``: an engine.editing.timing.StepTimer that records this device's step times and the time around
    them; the caller saves it once the result is out (so its own PNG encoding is counted too).
    """
    if getattr(models, "method", "paper") == "latent":  # a diffusers preset: Blended Latent Diffusion
        from engine.editing.latent.edit import latent_edit

        return latent_edit(image, mask, models, params, init_image, progress, cancel, timer)
    if timer is not None:
        timer.begin()
    from engine.editing.shared.augment import ExtendingAugmentations
    from engine.editing.shared.ranking import rank_order, score_candidates

    validate_params(params)
    prepared = prepare_edit(image, mask, models, params, init_image)
    notes = prepared.notes
    prompt = params.prompt.strip()

    # before any model call: the prompt's embedding too comes from the job's precision
    amp_dtype = set_precision(models, amp_dtype_for(params.precision, models.device), notes)
    models.unet.requires_grad_(False)
    text_embed = models.clip.encode_text([prompt]) if prompt else None
    augment = ExtendingAugmentations(models.clip.image_size, int(params.aug_num)) if prompt else None
    unet = UNetChoice(models, params, notes)
    model_pass = plan_model_pass(params, prepared.diffusion)
    store = getattr(timer, "store", None)  # a StepTimer's, for the auto decision
    times = store.get(timer.key) if store is not None else {}
    diffusion_steps = int(getattr(models, "diffusion_flags", {}).get("diffusion_steps", 1000))
    first_seconds, tile_seconds = detail_stage.stage_costs(params, times, bool(prompt), diffusion_steps)
    box, soft_mask = prepared.box, prepared.soft_mask
    detail_plan = detail_stage.plan_detail(
        params, prepared, len(model_pass.seeds), first_seconds, tile_seconds
    )
    detail_plan.progress_base = model_pass.work
    if detail_plan.note:
        notes.append(detail_plan.note)
    counter = ProgressCounter(progress, model_pass.work + detail_plan.work)
    job = JobRun(models, params, notes, unet, amp_dtype, run_splitting_on_oom, counter, cancel, timer)

    cancelled = False
    try:
        results, seeds = diffuse(job, prepared, model_pass, text_embed, augment)
        if timer is not None:
            timer.end_steps(len(seeds))
        scores = score_candidates(models.clip if prompt else None, results, prepared.model_mask, text_embed)
        order = rank_order(scores)
        w, h = box[2:]
        crops = [imaging.resize_image(to_pil(results[index]), (w, h)) for index in order]
        del results
        seeds, scores = [seeds[index] for index in order], [scores[index] for index in order]
        if detail_plan.on:
            if timer is not None:
                timer.begin_detail()
            crops = detail_stage.detail(job, prepared, detail_plan, crops, seeds)
            if timer is not None:
                timer.end_detail()
    except Cancelled:
        cancelled = True
    if cancelled:
        # Outside the except block the traceback (and the loop's tensors its frames hold) is gone, so the
        # memory really returns to the device before the caller hears of the cancel.
        free_memory()
        raise Cancelled()
    candidates = composite(prepared.source, soft_mask, box, crops, seeds, scores)
    free_memory()
    return EditResult(candidates=candidates, box=box, notes=notes)


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
