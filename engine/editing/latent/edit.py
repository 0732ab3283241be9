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
from typing import Any, Callable, List, Optional

import torch
from PIL import Image

from engine.editing.latent import blended_latent as bld
from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams, validate_params
from engine.editing.shared.prepare import PreparedEdit, prepare_edit, to_pil
from engine.editing.shared.ranking import rank_order, score_candidates
from engine.editing.shared.results import EditResult, composite
from engine.editing.shared.running import (
    JobRun,
    Progress,
    ProgressCounter,
    UNetChoice,
    candidate_seeds,
    composited,
)
from engine.errors import InputError
from engine.models.devices import free_memory


def schedule(params: EditParams) -> tuple:
    """(DDIM steps, steps skipped) from timestep_respacing ("50" or "ddim50") and skip_timesteps."""
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
    return steps, skip


def guidance_scale(models, params: EditParams) -> float:
    """The job's classifier-free guidance: the preset's unless the job sets one."""
    return float(models.guidance_scale if params.guidance_scale is None else params.guidance_scale)


@dataclass
class LatentInputs:
    """What the latent loop edits: one row for every seed, or one row shared by all (an edit's source)."""

    source: torch.Tensor  # the background's scaled latents
    masks: List[torch.Tensor]  # the phases' masks on the latent grid (bld.shrinking_masks)
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
    num_steps, skip = schedule(params)
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


def _ignored(params: EditParams, notes: List[str]) -> None:
    """Say which of the paper method's levers this loop has no use for, when they were asked for."""
    if params.detail == "on":
        notes.append("the full-resolution detail stage is the paper method's: not run for a latent preset")
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
) -> EditResult:
    """Run one editing job on latent models (engine.models.latent.LatentModels). Raises InputError for bad
    input, Cancelled when ``cancel`` is set."""
    if timer is not None:
        timer.begin()
    validate_params(params)
    num_steps, skip = schedule(params)
    prepared = prepare_edit(image, mask, models, params, init_image)
    notes = prepared.notes
    _ignored(params, notes)
    prompt = params.prompt.strip()
    scale = guidance_scale(models, params)
    inputs = _inputs(models, prepared, prompt if scale != 0 else "", init_image is not None)
    if not inputs.masks[-1].any():
        notes.append("the selection is thinner than the latent grid: only progressive shrinking edits it")
    inputs.masks = bld.shrinking_masks(inputs.masks[-1], bool(params.mask_shrink))
    seeds = candidate_seeds(params)
    notes.append(
        f"Blended Latent Diffusion: {num_steps - skip} of {num_steps} DDIM steps, guidance {scale:g}"
        + (", progressive mask shrinking" if params.mask_shrink else "")
        + (", background reconstruction" if params.background_reconstruction else "")
    )
    unet = UNetChoice(models, dataclasses.replace(params, compile=False), notes)  # eager: see LatentWindows
    counter = ProgressCounter(progress, (num_steps - skip) * len(seeds))
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

    decoded = job.guarded(lambda: job.run_batches(run, seeds, int(params.batch_size)))
    if timer is not None:
        timer.end_steps(len(seeds))
    results = background * (1 - model_mask) + decoded.to(models.device) * model_mask  # what the ranking sees
    ranker = models.clip if prompt else None
    text_embed = ranker.encode_text([prompt]) if ranker is not None else None
    scores = score_candidates(ranker, results, model_mask, text_embed)
    order = rank_order(scores)
    w, h = prepared.box[2:]
    crops = [imaging.resize_image(to_pil(results[index]), (w, h)) for index in order]
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
