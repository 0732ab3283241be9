"""``edit()``: one editing job from source image and mask to ranked candidates.

source + soft mask (any size)
  -> square context region around the mask (bridge.geometry.context_box), resized to the model size,
     mask binarised for the diffusion as the reference does
  -> batch_size x iterations_num candidates (blended.py), each from its own seed
  -> scores and rank (ranking.py)
  -> each result resized back and composited with the SOFT mask: where the mask is 0 the output is
     the source, byte for byte; plus an RGBA patch (alpha = mask) for the plugin over the part of the
     region the mask touches (no other pixel can change).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from engine.editing import imaging
from engine.editing.params import PRECISIONS, EditParams, validate_params
from engine.errors import Cancelled, EngineError, InputError
from engine.models.devices import amp_dtype_for, free_memory, is_out_of_memory

PREVIEW_MAX_SIDE = 256


@dataclass
class Progress:
    step: int  # candidate-steps done so far: each step of a batch of n candidates adds n
    total: int  # steps x candidates
    candidate_offset: int  # index of the first candidate of the batch being made
    preview: Optional[Image.Image] = None


class Candidate:
    """One result: ``image`` (full size, the converted source's mode, RGB or RGBA) and ``patch`` (RGBA over
    ``box``, alpha = soft mask). edit() gives ``pixels`` instead, which makes each when first asked for: a
    bridge job sends only the patch, and on a big document the full image would cost more than the rest.
    Both are then made from the source edit() was given: modifying it before reading them changes them."""

    def __init__(
        self,
        rank: int,
        seed: int,
        scores: Dict[str, Optional[float]],  # masked_clip, full_clip, combined (None without a prompt)
        image: Optional[Image.Image] = None,
        patch: Optional[Image.Image] = None,
        box: Tuple[int, int, int, int] = (0, 0, 0, 0),
        pixels: Optional[imaging.CandidatePixels] = None,
    ) -> None:
        self.rank, self.seed, self.scores = rank, seed, scores
        self._image, self._patch, self._pixels = image, patch, pixels
        self.box = tuple(pixels.box) if pixels is not None else box

    @property
    def image(self) -> Image.Image:
        if self._image is None and self._pixels is not None:
            self._image = self._pixels.image()
        return self._image

    @property
    def patch(self) -> Image.Image:
        if self._patch is None and self._pixels is not None:
            self._patch = self._pixels.patch()
        return self._patch

    def patch_rgba(self):
        """The patch as a C-ordered uint8 (h, w, 4) array (no PIL copy when edit() made it)."""
        import numpy as np

        if self._pixels is not None:
            return self._pixels.patch_rgba()
        patch = self.patch if self.patch.mode == "RGBA" else self.patch.convert("RGBA")
        return np.ascontiguousarray(np.asarray(patch))


@dataclass
class EditResult:
    candidates: List[Candidate]
    box: Tuple[int, int, int, int]
    notes: List[str] = field(default_factory=list)


@dataclass
class CompiledUNet:
    """A models object's torch.compile'd UNet (kept on the models, ``compiled_unet``: it lives as long as
    they do), or why compiling failed: later jobs then run eagerly at once."""

    module: Any = None
    error: Optional[str] = None


def _compiled_unet(models) -> CompiledUNet:
    import torch

    state = getattr(models, "compiled_unet", None)
    if state is None:
        try:
            state = CompiledUNet(module=torch.compile(models.unet))
        except Exception as exc:  # noqa: BLE001 - e.g. a Python version torch.compile does not support
            state = CompiledUNet(error=_describe(exc))
        models.compiled_unet = state
    return state


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _dynamic_batch(module):
    """Call ``module`` with the batch dimension marked dynamic: an out-of-memory split (4 -> 2 -> 1) or a
    smaller last batch reuses the compiled graph instead of compiling another."""
    import torch

    def call(x, timesteps, y=None):
        for tensor in (x, timesteps, y):
            if tensor is not None:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return module(x, timesteps, y)

    return call


class UNetChoice:
    """The UNet a job runs: compiled when asked and compiling works, else eager (with a note).

    Compiling happens lazily, at the first forward or backward, so a failure shows up while a batch runs
    (e.g. no Triton on Windows): ``run`` then reruns that batch eagerly, and if that works the failure was
    the compiler's: it is recorded on the models and the job goes on eagerly.
    """

    def __init__(self, models, params: EditParams, notes: List[str]) -> None:
        self.models, self.notes = models, notes
        self.state = _compiled_unet(models) if params.compile else None
        if self.state is not None and self.state.error is not None:
            notes.append(f"torch.compile is unavailable ({self.state.error}): the UNet ran eagerly")
        self.unet = models.unet if self.compiled is None else _dynamic_batch(self.compiled)

    @property
    def compiled(self):
        return None if self.state is None or self.state.error is not None else self.state.module

    def run(self, run: Callable[[Any, Sequence[int], int], Any], seeds: Sequence[int], offset: int):
        if self.compiled is None:
            return run(self.models.unet, seeds, offset)
        try:
            return run(self.unet, seeds, offset)
        except Exception as exc:  # noqa: BLE001 - out-of-memory and cancels go on up; others get an eager try
            if is_out_of_memory(exc) or isinstance(exc, (Cancelled, EngineError)):
                raise
            error = _describe(exc)
        result = run(self.models.unet, seeds, offset)  # raises the model's own error if it was not compiling
        self.state.error = error
        self.unet = self.models.unet
        self.notes.append(f"torch.compile failed ({error}): the UNet ran eagerly")
        return result


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


@dataclass
class BatchLimit:
    """How many candidates run at once; halved on out-of-memory and kept so for the rest of the job."""

    size: int


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


def _set_precision(models, dtype, notes: List[str]):
    """Put the UNet's inner blocks and CLIP in the job's precision (None: fp32), converting their weights
    once rather than re-casting them in every forward under autocast. Returns the autocast dtype still
    needed: None, unless the models cannot convert (then autocast as before)."""
    import torch

    unet, clip = models.unet, models.clip
    if not (hasattr(unet, "set_inner_dtype") and hasattr(clip, "set_dtype")):
        if dtype is not None:
            notes.append(f"UNet and CLIP ran under {str(dtype).replace('torch.', '')} autocast")
        return dtype
    unet.set_inner_dtype(dtype or torch.float32)
    clip.set_dtype(dtype or torch.float32)
    if dtype is not None:
        notes.append(
            f"UNet blocks and CLIP ran in {str(dtype).replace('torch.', '')} (timestep embedding, output "
            "layer and norms in float32)"
        )
    return None


def _to_model_tensor(image: Image.Image, size: int, device):
    import torch

    array = imaging.to_float_array(imaging.resize_image(image, (size, size)))
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def _to_pil(tensor) -> Image.Image:
    return imaging.from_float_array(tensor.detach().float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy())


def diffusion_for(models, params: EditParams):
    """The respaced diffusion of these parameters, with clear errors for a bad schedule or strength."""
    try:
        diffusion = models.diffusion(params.timestep_respacing)
    except ValueError as exc:
        raise InputError(f"timestep_respacing {params.timestep_respacing!r}: {exc}") from None
    if not 0 <= params.skip_timesteps < diffusion.num_timesteps:
        raise InputError(
            f"skip_timesteps must be between 0 and {diffusion.num_timesteps - 1} for timestep_respacing "
            f"{params.timestep_respacing!r}, got {params.skip_timesteps}"
        )
    return diffusion


def guidance_settings(params: EditParams):
    """The blended.GuidanceSettings of these parameters (shared by edit() and the extend job)."""
    from engine.editing.blended import GuidanceSettings

    return GuidanceSettings(
        clip_guidance_lambda=float(params.clip_guidance_lambda),
        range_lambda=float(params.range_lambda),
        lpips_sim_lambda=float(params.lpips_sim_lambda),
        l2_sim_lambda=float(params.l2_sim_lambda),
        background_preservation_loss=bool(params.background_preservation_loss),
        local_clip_guided_diffusion=bool(params.local_clip_guided_diffusion),
        enforce_background=bool(params.enforce_background),
        ddim=bool(params.ddim),
    )


def lpips_for(models, params: EditParams, guided: bool, notes: List[str]):
    """The LPIPS model when the background losses need it, else None (loaded first: fails fast)."""
    background_loss = bool(params.background_preservation_loss or params.local_clip_guided_diffusion)
    if not (guided and float(params.lpips_sim_lambda) and background_loss):
        return None
    from engine.models.clip import get_lpips

    pretrained = str(getattr(models, "preset", "")) not in ("tiny", "toy")
    lpips_model = get_lpips(
        "vgg",
        models.device,
        pretrained_backbone=pretrained,
        backbone_spec=getattr(models, "lpips_spec", None),
        weights_dir=getattr(models, "weights_dir", None),
    )
    if not pretrained:
        notes.append("LPIPS with a random backbone (test preset)")
    return lpips_model


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
    if timer is not None:
        timer.begin()
    import torch

    from engine.editing.augment import ExtendingAugmentations
    from engine.editing.blended import Prune, StepInfo, blended_diffusion
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

    diffusion = diffusion_for(models, params)

    device = models.device
    prompt = params.prompt.strip()
    # LPIPS before any model work: a missing VGG16 file must fail fast, not after the text encoder
    lpips_model = lpips_for(models, params, bool(prompt), notes)

    crop_rgb = imaging.crop(source.rgb, box)
    crop_mask = imaging.crop_array(soft_mask, box)
    background = _to_model_tensor(crop_rgb, size, device)
    model_mask = torch.from_numpy(imaging.binary_model_mask(crop_mask, size))[None, None].to(device)
    init = background
    if scribble is not None:
        init = _to_model_tensor(scribble, size, device) * model_mask + background * (1 - model_mask)

    # before any model call: the prompt's embedding too comes from the job's precision
    amp_dtype = _set_precision(models, amp_dtype_for(params.precision, device), notes)
    models.unet.requires_grad_(False)
    text_embed = models.clip.encode_text([prompt]) if prompt else None
    augment = ExtendingAugmentations(models.clip.image_size, int(params.aug_num)) if prompt else None
    settings = guidance_settings(params)

    unet_choice = UNetChoice(models, params, notes)
    num_steps = diffusion.num_timesteps - int(params.skip_timesteps)
    prune_factor = int(params.prune_factor) if prompt else 1  # nothing to rank by without a prompt
    prune_after = prune_step(num_steps, prune_factor, float(params.prune_at))
    if not prune_after:
        prune_factor = 1
    seeds = _candidate_seeds(params, prune_factor)
    batch_size = int(params.batch_size) * prune_factor  # candidates started per batch
    # progress counts candidate-steps (a pruned candidate's as if it ran on), so it only grows however
    # the batches are split
    total = num_steps * len(seeds)
    reported = [0]
    kept_seeds: List[int] = []  # the candidates' seeds in result order (pruning drops some)
    if prune_factor > 1:
        notes.append(
            f"started {len(seeds)} candidates and kept the best {len(seeds) // prune_factor} after step "
            f"{prune_after} of {num_steps} (ranked on their predicted result)"
        )

    def run(unet, batch_seeds: Sequence[int], offset: int):
        labels = None
        if getattr(models, "class_cond", False):
            # the reference conditions the 512 model on class 0 for every candidate
            labels = torch.zeros(len(batch_seeds), dtype=torch.long, device=device)

        def on_step(info: StepInfo) -> None:
            if timer is not None:
                timer.step(info.guided, info.batch)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            step = offset * num_steps + info.step * len(batch_seeds)
            if progress is None or step <= reported[0]:
                return  # a batch rerun after out-of-memory: nothing new until it passes what was shown
            reported[0] = step
            preview = None
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
            reuse_guidance=bool(params.reuse_guidance),
        ).detach()
        kept_seeds.extend(batch_seeds[i] for i in chosen)
        return result

    outputs = []
    cancelled = False
    try:
        limit = BatchLimit(batch_size)
        for offset in range(0, len(seeds), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            batch_seeds = seeds[offset : offset + batch_size]
            outputs.append(
                run_splitting_on_oom(partial(unet_choice.run, run), batch_seeds, offset, notes, limit)
            )
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
        timer.end_steps(len(kept_seeds))
    scores = score_candidates(models.clip if prompt else None, results, model_mask, text_embed)
    order = rank_order(scores)
    full_source = source.full()
    plan = imaging.plan_blend(full_source, soft_mask, box)  # not None: choose_box refused empty masks
    candidates = []
    for rank, index in enumerate(order, start=1):
        edited = imaging.resize_image(_to_pil(results[index]), (w, h))
        pixels = imaging.CandidatePixels(plan, full_source, edited)
        candidates.append(Candidate(rank, kept_seeds[index], scores[index], pixels=pixels))
    del results, outputs
    free_memory()
    return EditResult(candidates=candidates, box=box, notes=notes)


__all__ = ["PRECISIONS", "Candidate", "EditParams", "EditResult", "Progress", "edit", "validate_params"]
