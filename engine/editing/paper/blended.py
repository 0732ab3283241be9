"""Blended Diffusion, the paper's Algorithm 2, and its Algorithm 1 baseline (local CLIP-guided diffusion).

Algorithm 2, as this module runs it (t counts down over the respaced schedule, k = T - skip_timesteps):

    x_k = q_sample(init, k)                                   # start from the noised input, not pure noise
    for t = k-1 ... 0:
        out     = p_mean_variance(UNet(x_t, t))               # ONE forward, with gradient w.r.t. x_t
        x_in    = pred_x0 * fac + x_t * (1 - fac)             # fac = sqrt(1 - alpha_bar_t)
        loss    = lambda_clip * D_CLIP(augment(x_in * m)) + lambda_range * range(pred_x0)
        g       = -d loss / d x_t
        x_fg    = guided DDPM (or DDIM) step from the SAME out, detached, shifted by g
        x_bg    = q_sample(background, t)                     # the untouched image noised to level t
        x_{t-1} = x_fg * m + x_bg * (1 - m)
    result = background * (1 - m) + pred_x0 * m               # the background exactly as it was

The authors' code runs the UNet twice per step (once without gradient for the sample, once with gradient
inside cond_fn); the outputs are the same, so one forward with gradient serves both (bench/edit_bench.py
checks it and measures the difference).

Algorithm 1 (``local=True``) drops the blending and adds the background losses
lpips_lambda * LPIPS + l2_lambda * MSE between x_in and the source outside the mask; the final
background enforcement is then optional.

An empty prompt (``text_embed=None``) turns guidance off entirely: no gradient, no CLIP call, i.e. plain
blended inpainting (object removal).

Two cheaper variants for the quality modes (paper/modes.py), both off by default (the paper's loop):
``guidance_every=k`` guides only every k-th step (the others run one UNet forward without gradient, and
step with g = 0, or with ``reuse_guidance`` with the last guided step's g, so the total push towards the
text stays about the same at no extra cost); ``prune`` ranks the candidates' pred_x0 after one step and
continues with the best only.

Guidance on the clean estimate (``settings.guidance_grad == "x0"``, issue 23; Manifold Preserving Guided
Diffusion, He et al. 2024; TFG's mu-term): the guided step runs the UNet WITHOUT gradient, takes the same
loss's gradient with respect to pred_x0 only (x_t held fixed in x_in), corrects the estimate
x0' = pred_x0 - rho_t * dloss/dx0 and takes the ordinary DDPM / DDIM step from x0' and x_t
(``GaussianDiffusion.x0_guided_step``); the blend is unchanged. The backward pass touches CLIP (and LPIPS
for Algorithm 1) only: about 1.3 UNet-forward equivalents a step at full size against about 3.

Randomness: candidate b draws everything (start noise, step noise, background noise, augmentation
parameters) from its own generator seeded with ``seeds[b]``, so a candidate is reproduced by its seed alone.
(The reference shares one background noise draw across the batch; each candidate's result has the same
distribution either way.)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from engine.editing.paper.modes import is_guided_step
from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
from engine.editing.shared.params import GUIDANCE_GRADS


@dataclass
class GuidanceSettings:
    """The loss weights and switches (names and defaults of the reference CLI)."""

    clip_guidance_lambda: float = 1000.0
    range_lambda: float = 50.0
    lpips_sim_lambda: float = 1000.0
    l2_sim_lambda: float = 10000.0
    background_preservation_loss: bool = False
    local_clip_guided_diffusion: bool = False  # Algorithm 1: no blending
    enforce_background: bool = True
    ddim: bool = False
    # "unet": the paper's gradient w.r.t. x_t through the UNet; "x0": w.r.t. the clean estimate only, the
    # UNet run without gradient and the step taken from the corrected estimate (MPGD, issue 23)
    guidance_grad: str = "unet"


@dataclass
class StepInfo:
    """What the per-step callback sees. ``pred_x0`` is detached, [B, 3, H, W] in [-1, 1]."""

    step: int  # 1-based within this run
    total: int
    t: int  # respaced timestep index of this step
    pred_x0: torch.Tensor
    guided: bool = True  # this step computed the guidance gradient
    batch: int = 1  # candidates this step ran for
    x0: bool = False  # ... w.r.t. the clean estimate only (no backward through the UNet)


@dataclass
class Prune:
    """After step ``after_step``, continue with the candidates ``choose(pred_x0)`` returns (indices)."""

    after_step: int
    choose: Callable[[torch.Tensor], Sequence[int]]


StepCallback = Callable[[StepInfo], None]


def range_loss(pred_x0: torch.Tensor) -> torch.Tensor:
    """Per image: mean squared amount by which pred_x0 leaves [-1, 1] (keeps colours in range)."""
    return (pred_x0 - pred_x0.clamp(-1, 1)).pow(2).mean(dim=(1, 2, 3))


def _noise(like: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One standard normal image per candidate, each from that candidate's generator."""
    shape = like.shape[1:]
    return torch.stack(
        [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    ).to(like.device)


def make_generators(seeds: Sequence[int], device: torch.device) -> List[torch.Generator]:
    generators = []
    for seed in seeds:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
        generators.append(generator)
    return generators


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """bf16/fp16 autocast for the UNet and CLIP on CUDA; a no-op for fp32 (dtype None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def blended_diffusion(
    unet: torch.nn.Module,
    diffusion,
    init: torch.Tensor,
    mask: torch.Tensor,
    seeds: Sequence[int],
    skip_timesteps: int,
    settings: GuidanceSettings,
    background: Optional[torch.Tensor] = None,
    clip_model=None,
    text_embed: Optional[torch.Tensor] = None,
    augment: Optional[ExtendingAugmentations] = None,
    lpips_model: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    class_labels: Optional[torch.Tensor] = None,
    on_step: Optional[StepCallback] = None,
    amp_dtype: Optional[torch.dtype] = None,
    guidance_every: int = 1,
    prune: Optional[Prune] = None,
    reuse_guidance: bool = False,
) -> torch.Tensor:
    """Edit ``init`` inside ``mask`` for each seed; returns the results [len(seeds), 3, H, W] in [-1, 1].

    init: [1, 3, H, W] in [-1, 1], where the diffusion starts (a scribbled image in scribble mode).
    background: [1, 3, H, W], the image kept outside the mask (default: init).
    mask: [1, 1, H, W] binary, 1 = edit.
    text_embed: [1, D] L2-normalised prompt embedding, or None for no guidance (empty prompt).
    on_step: called after every step; raising from it (e.g. engine.errors.Cancelled) ends the run there.
    guidance_every: guide step 1 and every guidance_every-th step after it (1: every step, the paper).
    prune: drop candidates after one step (the result then has fewer rows than ``seeds``).
    reuse_guidance: an unguided step shifts its mean by the last guided step's gradient instead of none.
    """
    if background is None:
        background = init
    device = init.device
    batch = len(seeds)
    num_steps = diffusion.num_timesteps - skip_timesteps
    if num_steps < 1:
        raise ValueError(
            f"skip_timesteps ({skip_timesteps}) must be smaller than the number of timesteps "
            f"({diffusion.num_timesteps})"
        )
    guided = text_embed is not None
    if settings.guidance_grad not in GUIDANCE_GRADS:
        raise ValueError(
            f"guidance_grad must be one of {', '.join(GUIDANCE_GRADS)}, got {settings.guidance_grad!r}"
        )
    x0_space = settings.guidance_grad == "x0"
    if guided and (clip_model is None or augment is None):
        raise ValueError("guidance needs clip_model and augment")
    local = settings.local_clip_guided_diffusion
    background_loss = guided and (settings.background_preservation_loss or local)
    if background_loss and settings.lpips_sim_lambda and lpips_model is None:
        raise ValueError("the background preservation loss needs an LPIPS model")
    generators = make_generators(seeds, device)
    steps = list(range(num_steps))[::-1]
    keep = 1 - mask

    # x_k: the input noised to the first step's level, one noise draw per candidate.
    init_batch = init.expand(batch, -1, -1, -1)
    t_first = torch.full((batch,), steps[0], device=device, dtype=torch.long)
    x = diffusion.q_sample(init_batch, t_first, noise=_noise(init_batch, generators))
    pred_x0 = init_batch
    last_gradient: Optional[torch.Tensor] = None

    for step_number, index in enumerate(steps, start=1):
        t = torch.full((batch,), index, device=device, dtype=torch.long)
        guide = guided and is_guided_step(step_number, guidance_every)
        through_unet = guide and not x0_space  # the paper's gradient w.r.t. x_t, through the UNet
        x = x.detach().requires_grad_(through_unet)
        with torch.set_grad_enabled(through_unet):
            with autocast_context(device, amp_dtype):
                model_output = unet(x, diffusion.model_timesteps(t), class_labels)
            out = diffusion.p_mean_variance(None, x, t, model_output=model_output.float())
            gradient = None
            if guide:
                # g = -d loss / d x_t, or with x0_space -d loss / d pred_x0 (out is then graph-free)
                x0 = out["pred_xstart"].detach().requires_grad_(True) if x0_space else out["pred_xstart"]
                with torch.enable_grad():
                    loss = _guidance_loss(
                        x0,
                        x,
                        index,
                        diffusion,
                        mask,
                        background,
                        settings,
                        clip_model,
                        text_embed,
                        augment,
                        generators,
                        lpips_model,
                        background_loss,
                        amp_dtype,
                    )
                    gradient = -torch.autograd.grad(loss, x0 if x0_space else x)[0]
                last_gradient = gradient
            elif reuse_guidance:
                gradient = last_gradient
        out = {key: value.detach() for key, value in out.items()}
        x = x.detach()
        noise = _noise(x, generators)
        if x0_space and gradient is not None:
            stepped = diffusion.x0_guided_step(out, x, t, gradient, ddim=settings.ddim, noise=noise)
        elif settings.ddim:
            stepped = diffusion.ddim_step(out, x, t, gradient=gradient)
        else:
            stepped = diffusion.ddpm_step(out, x, t, gradient=gradient, noise=noise)
        x = stepped["sample"]
        pred_x0 = stepped["pred_xstart"]
        if not local:
            # Blend: outside the mask the sample is the background noised to level t, fresh noise per step.
            x_bg = diffusion.q_sample(background.expand(batch, -1, -1, -1), t, noise=_noise(x, generators))
            x = x * mask + x_bg * keep
        if on_step is not None:
            on_step(StepInfo(step_number, num_steps, index, pred_x0, guide, batch, guide and x0_space))
        if prune is not None and step_number == prune.after_step:
            kept = list(prune.choose(pred_x0))
            x, pred_x0 = x[kept], pred_x0[kept]
            generators = [generators[i] for i in kept]
            last_gradient = None if last_gradient is None else last_gradient[kept]
            class_labels = None if class_labels is None else class_labels[kept]
            batch = len(kept)

    if settings.enforce_background:
        return background * keep + pred_x0 * mask
    return pred_x0


def _guidance_loss(
    pred_x0: torch.Tensor,
    x: torch.Tensor,
    index: int,
    diffusion,
    mask: torch.Tensor,
    background: torch.Tensor,
    settings: GuidanceSettings,
    clip_model,
    text_embed: torch.Tensor,
    augment: ExtendingAugmentations,
    generators: Sequence[torch.Generator],
    lpips_model,
    background_loss: bool,
    amp_dtype: Optional[torch.dtype],
) -> torch.Tensor:
    """The guidance loss, summed over candidates so each one's gradient is its own."""
    fac = float(diffusion.sqrt_one_minus_alphas_cumprod[index])
    # x_in leans on pred_x0 early (noisy x_t) and on x_t late, as the reference's cond_fn.
    x_in = pred_x0 * fac + x * (1 - fac)
    loss = x.new_zeros(())
    if settings.clip_guidance_lambda:
        with autocast_context(x.device, amp_dtype):
            distances = clip_distances(clip_model, x_in * mask, text_embed, augment, generators)
        loss = loss + distances.float().sum() * settings.clip_guidance_lambda
    if settings.range_lambda:
        loss = loss + range_loss(pred_x0).sum() * settings.range_lambda
    if background_loss:
        keep = 1 - mask
        source = (background * keep).expand_as(x_in)
        if settings.lpips_sim_lambda:
            loss = loss + lpips_model(x_in * keep, source).sum() * settings.lpips_sim_lambda
        if settings.l2_sim_lambda:
            # per-image mean, summed: the reference's batch mean would scale each gradient by 1/batch
            squared = (x_in * keep - source).pow(2).mean(dim=(1, 2, 3))
            loss = loss + squared.sum() * settings.l2_sim_lambda
    return loss
