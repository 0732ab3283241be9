"""``latent_edit()``: ``edit()`` for a preset whose method is ``latent``, the same stages around another loop:

  prepare   (prepare.py)  the context square at the model's size, the binary mask (as the paper's method)
  diffuse   (latent.py)   every candidate through Blended Latent Diffusion, in batches of batch_size
  decode                  the VAE's decoder, or a copy fine-tuned per candidate (background reconstruction)
  rank      (ranking.py)  the preset's ranking CLIP on each result composited at the model's size
  composite (results.py)  each result resized into the box and blended with the SOFT mask: where the mask
                          is 0 the output is the source, byte for byte

Same EditParams, EditResult and Candidate as the paper's method, so the CLI and the bridge need no change.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

import torch
from PIL import Image

from engine.editing.latent import blended_latent as bld
from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams, validate_params
from engine.editing.shared.prepare import prepare_edit, to_pil
from engine.editing.shared.ranking import rank_order, score_candidates
from engine.editing.shared.results import EditResult, composite
from engine.editing.shared.running import PREVIEW_MAX_SIDE, Progress, ProgressCounter, candidate_seeds
from engine.errors import Cancelled, InputError
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


def sample(
    models,
    params: EditParams,
    source: torch.Tensor,
    masks: List[torch.Tensor],
    seeds: List[int],
    cond,
    uncond,
    background: torch.Tensor,
    model_mask: torch.Tensor,
    init: Optional[torch.Tensor] = None,
    on_step: Optional[Callable[[bld.LatentStep], None]] = None,
    unet=None,
) -> torch.Tensor:
    """The candidates of ``seeds`` decoded to [-1, 1] at the model's size: the latent loop, the decoder (or
    a copy fine-tuned per candidate to ``background`` outside ``model_mask``). ``source``/``background``:
    one row for every seed, or one row shared by all (an edit's single source); ``unet``: the preset's
    unless the caller runs another wrapper of it."""
    num_steps, skip = schedule(params)
    latents = bld.blended_latent_diffusion(
        models.unet if unet is None else unet,
        models.scheduler(),
        source,
        masks,
        seeds,
        num_steps,
        skip,
        cond,
        uncond,
        guidance_scale(models, params),
        init=init,
        on_step=on_step,
    )
    decoded = bld.decode(models.vae, latents)
    if params.background_reconstruction:
        shared = background.shape[0] == 1
        decoded = torch.cat(
            [
                bld.reconstruct_background(
                    models.vae,
                    latents[i : i + 1],
                    decoded[i : i + 1],
                    background if shared else background[i : i + 1],
                    model_mask,
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
    device, vae = models.device, models.vae

    source = bld.encode(vae, prepared.background)
    init = bld.encode(vae, prepared.init) if init_image is not None else None
    grid = bld.latent_mask(prepared.model_mask, source.shape[-1])
    if not grid.any():
        notes.append("the selection is thinner than the latent grid: only progressive shrinking edits it")
    masks = bld.shrinking_masks(grid, bool(params.mask_shrink))
    uncond = models.encode_prompt("")
    cond = models.encode_prompt(prompt) if prompt and scale != 0 else None
    seeds = candidate_seeds(params)
    counter = ProgressCounter(progress, (num_steps - skip) * len(seeds))
    batch_size = int(params.batch_size)
    background, model_mask = prepared.background, prepared.model_mask
    notes.append(
        f"Blended Latent Diffusion: {num_steps - skip} of {num_steps} DDIM steps, guidance {scale:g}"
        + (", progressive mask shrinking" if params.mask_shrink else "")
        + (", background reconstruction" if params.background_reconstruction else "")
    )

    def run_batch(batch_seeds: List[int], offset: int) -> torch.Tensor:
        def on_step(info: bld.LatentStep) -> None:
            if timer is not None:
                timer.step(cond is not None, info.batch)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            preview = None
            if params.preview_every and (info.step % params.preview_every == 0 or info.step == info.total):
                decoded = bld.decode(vae, info.latents[:1])[0]
                preview = to_pil(background[0] * (1 - model_mask[0]) + decoded * model_mask[0])
                preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            counter.report(offset * (num_steps - skip) + info.step * info.batch, offset, preview)

        if timer is not None:
            timer.start()
        return sample(
            models, params, source, masks, batch_seeds, cond, uncond, background, model_mask, init, on_step
        )

    try:
        decoded = torch.cat(
            [
                run_batch(seeds[offset : offset + batch_size], offset)
                for offset in range(0, len(seeds), batch_size)
            ]
        )
    except Cancelled:
        cancelled = True
    else:
        cancelled = False
    if cancelled:
        free_memory()  # outside the except block: the loop's tensors are gone with its traceback
        raise Cancelled()
    if timer is not None:
        timer.end_steps(len(seeds))
    results = background * (1 - model_mask) + decoded.to(device) * model_mask  # what the ranking sees
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
