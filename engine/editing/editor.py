"""``edit()``: one editing job from source image and mask to ranked candidates.

source + soft mask (any size)
  -> square context region around the mask (bridge.geometry.context_box), resized to the model size,
     mask binarised for the diffusion as the reference does
  -> batch_size x iterations_num candidates (blended.py), each from its own seed
  -> scores and rank (ranking.py)
  -> each result resized back and composited with the SOFT mask: where the mask is 0 the output is
     the source, byte for byte; plus an RGBA patch of the region (alpha = mask) for the plugin.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from engine.editing import imaging
from engine.editing.params import PRECISIONS, EditParams, validate_params
from engine.errors import Cancelled, EngineError, InputError
from engine.models.devices import amp_dtype_for, free_memory, is_out_of_memory

PREVIEW_MAX_SIDE = 256


@dataclass
class Progress:
    step: int  # 1-based, counted over all iterations
    total: int
    candidate_offset: int  # index of the first candidate of the batch being made
    preview: Optional[Image.Image] = None


@dataclass
class Candidate:
    rank: int
    seed: int
    scores: Dict[str, Optional[float]]  # masked_clip, full_clip, combined (None without a prompt)
    image: Image.Image  # full size, mode of the (converted) source: RGB or RGBA
    patch: Image.Image  # RGBA, box size, alpha = soft mask
    box: Tuple[int, int, int, int]


@dataclass
class EditResult:
    candidates: List[Candidate]
    box: Tuple[int, int, int, int]
    notes: List[str] = field(default_factory=list)


_COMPILED: Dict[int, Any] = {}


def _unet_for(models, params: EditParams):
    if not params.compile:
        return models.unet
    import torch

    key = id(models.unet)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(models.unet)
    return _COMPILED[key]


def _candidate_seeds(params: EditParams, prune_factor: int = 1) -> List[int]:
    """Seeds of every candidate started: batch_size x prune_factor per iteration."""
    base = int(params.seed) if params.seed is not None else secrets.randbelow(2**31)
    count = int(params.batch_size) * int(params.iterations_num) * prune_factor
    return [base + index for index in range(count)]


def _pruner(models, background, model_mask, text_embed, keep: int, chosen: List[int]):
    """choose(pred_x0) for blended.Prune: the ``keep`` best by the final ranking's score of the composite.

    The chosen indices (in generation order) also replace the contents of ``chosen``.
    """
    from engine.editing.ranking import rank_order, score_candidates

    def choose(pred_x0):
        composed = background * (1 - model_mask) + pred_x0 * model_mask
        best = sorted(rank_order(score_candidates(models.clip, composed, model_mask, text_embed))[:keep])
        chosen[:] = best
        return best

    return choose


def run_splitting_on_oom(
    run: Callable[[Sequence[int], int], Any], seeds: Sequence[int], offset: int, notes: List[str]
):
    """run(seeds, offset) -> tensor [len(seeds), ...]; on out-of-memory retry as two halves.

    Each candidate's randomness comes from its own seed, so a split batch makes the same candidates.
    """
    import torch

    try:
        return run(seeds, offset)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
        if not is_out_of_memory(exc):
            raise
        if len(seeds) == 1:
            raise EngineError(
                "out of memory even for a single candidate: use a smaller model preset, another device "
                "(--device cpu) or close other programs using the GPU"
            ) from None
    free_memory()
    half = len(seeds) // 2
    notes.append(f"out of memory with {len(seeds)} candidates at once: retried in batches of {half}")
    first = run_splitting_on_oom(run, seeds[:half], offset, notes)
    second = run_splitting_on_oom(run, seeds[half:], offset + half, notes)
    return torch.cat([first, second], dim=0)


def _to_model_tensor(image: Image.Image, size: int, device):
    import torch

    array = imaging.to_float_array(imaging.resize_image(image, (size, size)))
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def _to_pil(tensor) -> Image.Image:
    return imaging.from_float_array(tensor.detach().float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy())


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
    ``timer``: an engine.editing.timing.StepTimer that records this device's step times.
    """
    import torch

    from engine.editing.augment import ExtendingAugmentations
    from engine.editing.blended import GuidanceSettings, Prune, StepInfo, blended_diffusion
    from engine.editing.modes import prune_step
    from engine.editing.ranking import rank_order, score_candidates

    validate_params(params)
    source = imaging.prepare_source(image, "image")
    notes = list(source.notes)
    soft_mask = imaging.mask_array(mask, source.size)
    if params.invert_mask:
        soft_mask = 255 - soft_mask
    size = int(models.image_size)
    box = imaging.choose_box(soft_mask, size)
    x, y, w, h = box
    notes.append(f"edited the {w}x{h} region at ({x}, {y}) at the model's {size}x{size}")
    if w != h:
        notes.append("the image is narrower than the context square: the region was stretched to a square")

    scribble = None
    if init_image is not None:
        scribble_prepared = imaging.prepare_source(init_image, "init image")
        if scribble_prepared.size != source.size:
            raise InputError(
                f"init image size {scribble_prepared.size[0]}x{scribble_prepared.size[1]} differs from the "
                f"image size {source.size[0]}x{source.size[1]}"
            )
        notes.extend(scribble_prepared.notes)
        scribble = imaging.crop(scribble_prepared.rgb, box)

    try:
        diffusion = models.diffusion(params.timestep_respacing)
    except ValueError as exc:
        raise InputError(f"timestep_respacing {params.timestep_respacing!r}: {exc}") from None
    if not 0 <= params.skip_timesteps < diffusion.num_timesteps:
        raise InputError(
            f"skip_timesteps must be between 0 and {diffusion.num_timesteps - 1} for timestep_respacing "
            f"{params.timestep_respacing!r}, got {params.skip_timesteps}"
        )

    device = models.device
    prompt = params.prompt.strip()
    # LPIPS before any model work: a missing VGG16 file must fail fast, not after the text encoder
    lpips_model = None
    background_loss = bool(params.background_preservation_loss or params.local_clip_guided_diffusion)
    if prompt and float(params.lpips_sim_lambda) and background_loss:
        from engine.models.clip import get_lpips

        pretrained = str(getattr(models, "preset", "")) not in ("tiny", "toy")
        lpips_model = get_lpips(
            "vgg",
            device,
            pretrained_backbone=pretrained,
            backbone_spec=getattr(models, "lpips_spec", None),
            weights_dir=getattr(models, "weights_dir", None),
        )
        if not pretrained:
            notes.append("LPIPS with a random backbone (test preset)")

    crop_rgb = imaging.crop(source.rgb, box)
    crop_mask = imaging.crop_array(soft_mask, box)
    background = _to_model_tensor(crop_rgb, size, device)
    model_mask = torch.from_numpy(imaging.binary_model_mask(crop_mask, size))[None, None].to(device)
    init = background
    if scribble is not None:
        init = _to_model_tensor(scribble, size, device) * model_mask + background * (1 - model_mask)

    models.unet.requires_grad_(False)
    text_embed = models.clip.encode_text([prompt]) if prompt else None
    augment = ExtendingAugmentations(models.clip.image_size, int(params.aug_num)) if prompt else None
    settings = GuidanceSettings(
        clip_guidance_lambda=float(params.clip_guidance_lambda),
        range_lambda=float(params.range_lambda),
        lpips_sim_lambda=float(params.lpips_sim_lambda),
        l2_sim_lambda=float(params.l2_sim_lambda),
        background_preservation_loss=bool(params.background_preservation_loss),
        local_clip_guided_diffusion=bool(params.local_clip_guided_diffusion),
        enforce_background=bool(params.enforce_background),
        ddim=bool(params.ddim),
    )

    amp_dtype = amp_dtype_for(params.precision, device)
    if amp_dtype is not None:
        notes.append(f"UNet and CLIP ran under {str(amp_dtype).replace('torch.', '')} autocast")
    unet = _unet_for(models, params)
    num_steps = diffusion.num_timesteps - int(params.skip_timesteps)
    prune_factor = int(params.prune_factor) if prompt else 1  # nothing to rank by without a prompt
    prune_after = prune_step(num_steps, prune_factor, float(params.prune_at))
    if not prune_after:
        prune_factor = 1
    seeds = _candidate_seeds(params, prune_factor)
    batch_size = int(params.batch_size) * prune_factor  # candidates started per batch
    total = num_steps * int(params.iterations_num)
    kept_seeds: List[int] = []  # the candidates' seeds in result order (pruning drops some)
    if prune_factor > 1:
        notes.append(
            f"started {len(seeds)} candidates and kept the best {len(seeds) // prune_factor} after step "
            f"{prune_after} of {num_steps} (ranked on their predicted result)"
        )

    def run(batch_seeds: Sequence[int], offset: int):
        iteration = offset // batch_size
        labels = None
        if getattr(models, "class_cond", False):
            # the reference conditions the 512 model on class 0 for every candidate
            labels = torch.zeros(len(batch_seeds), dtype=torch.long, device=device)

        def on_step(info: StepInfo) -> None:
            if timer is not None:
                timer.step(info.guided, info.batch)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if progress is None:
                return
            preview = None
            step = iteration * num_steps + info.step
            if params.preview_every and (info.step % params.preview_every == 0 or info.step == info.total):
                composed = background[0] * (1 - model_mask[0]) + info.pred_x0[0] * model_mask[0]
                preview = _to_pil(composed)
                preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            progress(Progress(step=step, total=total, candidate_offset=offset, preview=preview))

        chosen: List[int] = list(range(len(batch_seeds)))
        prune = None
        if prune_factor > 1:
            keep = max(1, len(batch_seeds) // prune_factor)
            prune = Prune(prune_after, _pruner(models, background, model_mask, text_embed, keep, chosen))
        if timer is not None:
            timer.start()
        result = blended_diffusion(
            unet,
            diffusion,
            init,
            model_mask,
            batch_seeds,
            int(params.skip_timesteps),
            settings,
            background=background,
            clip_model=models.clip if prompt else None,
            text_embed=text_embed,
            augment=augment,
            lpips_model=lpips_model,
            class_labels=labels,
            on_step=on_step,
            amp_dtype=amp_dtype,
            guidance_every=int(params.guidance_every),
            prune=prune,
        ).detach()
        kept_seeds.extend(batch_seeds[i] for i in chosen)
        return result

    outputs = []
    cancelled = False
    try:
        for offset in range(0, len(seeds), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            outputs.append(run_splitting_on_oom(run, seeds[offset : offset + batch_size], offset, notes))
        results = torch.cat(outputs, dim=0)
    except Cancelled:
        cancelled = True
    if cancelled:
        # Outside the except block the traceback (and the loop's tensors its frames hold) is gone, so the
        # memory really returns to the device before the caller hears of the cancel.
        outputs.clear()
        free_memory()
        raise Cancelled()

    if timer is not None:
        timer.save()
    scores = score_candidates(models.clip if prompt else None, results, model_mask, text_embed)
    order = rank_order(scores)
    full_source = source.full()
    candidates = []
    for rank, index in enumerate(order, start=1):
        edited = imaging.resize_image(_to_pil(results[index]), (w, h))
        full = imaging.composite(full_source, edited, soft_mask, box)
        candidates.append(
            Candidate(
                rank=rank,
                seed=kept_seeds[index],
                scores=scores[index],
                image=full,
                patch=imaging.patch(full, soft_mask, box),
                box=box,
            )
        )
    del results, outputs
    free_memory()
    return EditResult(candidates=candidates, box=box, notes=notes)


__all__ = ["PRECISIONS", "Candidate", "EditParams", "EditResult", "Progress", "edit", "validate_params"]
