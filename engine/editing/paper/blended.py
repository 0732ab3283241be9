"""Blended Diffusion, the paper's Algorithm 2, and its Algorithm 1 baseline (local CLIP-guided diffusion).

Algorithm 2 as ``blended_diffusion`` runs it (t counts down the respaced schedule, k = T - skip_timesteps):

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
checks it and measures the difference). As guided-diffusion keeps ``cond_fn`` apart from the sampler,
``ClipGuidance`` holds what the loss needs (CLIP, the augmentations, LPIPS, the prompt's embedding, the
weights) and gives a step's prediction with its gradient; the sampler only steps and blends.

Algorithm 1 (``local=True``) drops the blending and adds the background losses
lpips_lambda * LPIPS + l2_lambda * MSE between x_in and the source outside the mask; the final
background enforcement is then optional.

An empty prompt (``guidance=None``) turns guidance off entirely: no gradient, no CLIP call, i.e. plain
blended inpainting (object removal).

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
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
from engine.editing.shared.params import GUIDANCE_GRADS, EditParams

Prediction = Dict[str, torch.Tensor]  # GaussianDiffusion.p_mean_variance's dict
Denoise = Callable[[torch.Tensor, torch.Tensor], Prediction]  # (x_t, t) -> the UNet's prediction
_CASTS = {"float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class GuidanceSettings:
    """The loss weights and switches of a job: EditParams' fields of the same names (the reference CLI's),
    so the defaults live there only (``from_params``)."""

    clip_guidance_lambda: float
    range_lambda: float
    lpips_sim_lambda: float
    l2_sim_lambda: float
    background_preservation_loss: bool
    local_clip_guided_diffusion: bool  # Algorithm 1: no blending
    enforce_background: bool
    ddim: bool
    # "unet": the paper's gradient w.r.t. x_t through the UNet; "x0": w.r.t. the clean estimate only, the
    # UNet run without gradient and the step taken from the corrected estimate (MPGD, issue 23)
    guidance_grad: str

    @classmethod
    def from_params(cls, params: EditParams) -> GuidanceSettings:
        return cls(**{f.name: _CASTS[str(f.type)](getattr(params, f.name)) for f in fields(cls)})


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


@dataclass
class ClipGuidance:
    """The guidance of one prompt (guided-diffusion's ``cond_fn``): the loss of Algorithm 2 (Algorithm 1's
    background losses with ``local_clip_guided_diffusion`` or ``background_preservation_loss``) and its
    gradient at a step. ``lpips`` is needed only for those background losses."""

    clip: Any
    text_embed: torch.Tensor  # [1, D], L2-normalised
    augment: ExtendingAugmentations
    settings: GuidanceSettings
    lpips: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    amp_dtype: Optional[torch.dtype] = None  # CLIP's autocast (None: none)
    # issue 39 (paper/regional.py): (embedding, mask, (top, left, side)) of each region with a prompt; the
    # CLIP loss is then summed over them, each on its own masked square, instead of text_embed's
    regions: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor, Tuple[int, int, int]]]] = None

    def __post_init__(self) -> None:
        grad = self.settings.guidance_grad
        if grad not in GUIDANCE_GRADS:
            raise ValueError(f"guidance_grad must be one of {', '.join(GUIDANCE_GRADS)}, got {grad!r}")
        if self.clip is None or self.augment is None:
            raise ValueError("guidance needs clip_model and augment")
        if self.background_loss and self.settings.lpips_sim_lambda and self.lpips is None:
            raise ValueError("the background preservation loss needs an LPIPS model")

    @property
    def x0_space(self) -> bool:
        """The gradient is w.r.t. the clean estimate (MPGD), not w.r.t. x_t through the UNet."""
        return self.settings.guidance_grad == "x0"

    @property
    def background_loss(self) -> bool:
        s = self.settings
        return s.background_preservation_loss or s.local_clip_guided_diffusion

    def predict(
        self,
        denoise: Denoise,
        x: torch.Tensor,
        t: torch.Tensor,
        fac: float,
        *,
        mask: torch.Tensor,
        background: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> tuple:
        """(the UNet's prediction at x_t, detached; g = -d loss / d x_t, or -d loss / d pred_x0 in x0
        space). ``fac`` = sqrt(1 - alpha_bar_t) of this step."""
        if self.x0_space:
            with torch.no_grad():
                out = denoise(x, t)
            x0 = out["pred_xstart"].detach().requires_grad_(True)
            with torch.enable_grad():
                loss = self.loss(x0, x, fac, mask=mask, background=background, generators=generators)
                return out, -torch.autograd.grad(loss, x0)[0]
        if self.regions:
            return self._regions_predict(
                denoise, x, t, fac, mask=mask, background=background, generators=generators
            )
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = denoise(x, t)
            loss = self.loss(
                out["pred_xstart"], x, fac, mask=mask, background=background, generators=generators
            )
            gradient = -torch.autograd.grad(loss, x)[0]
        return {key: value.detach() for key, value in out.items()}, gradient

    def _regions_predict(self, denoise: Denoise, x, t, fac: float, *, mask, background, generators) -> tuple:
        """Regions through the UNet: each region's CLIP loss moves only its own pixels (its gradient
        masked to the region, one backward pass each), the rest of the loss (range, background) all; without
        the masks a region's loss would redraw the others through the UNet's receptive field."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = denoise(x, t)
            pred_x0 = out["pred_xstart"]
            x_in = pred_x0 * fac + x * (1 - fac)
            gradient = torch.zeros_like(x)
            for embed, region_mask, square in self.regions or ():
                with autocast_context(x.device, self.amp_dtype):
                    term = self._region_distance(x_in, embed, region_mask, square, generators).sum()
                term = term * self.settings.clip_guidance_lambda
                gradient -= region_mask * torch.autograd.grad(term, x, retain_graph=True)[0]
            rest = self.loss(
                pred_x0, x, fac, mask=mask, background=background, generators=generators, clip=False
            )
            if rest.requires_grad:
                gradient -= torch.autograd.grad(rest, x)[0]
        return {key: value.detach() for key, value in out.items()}, gradient

    def loss(
        self,
        pred_x0: torch.Tensor,
        x: torch.Tensor,
        fac: float,
        *,
        mask: torch.Tensor,
        background: torch.Tensor,
        generators: Sequence[torch.Generator],
        clip: bool = True,
    ) -> torch.Tensor:
        """The guidance loss, summed over candidates so each one's gradient is its own (``clip`` False:
        without its CLIP term)."""
        s = self.settings
        # x_in leans on pred_x0 early (noisy x_t) and on x_t late, as the reference's cond_fn.
        x_in = pred_x0 * fac + x * (1 - fac)
        loss = x.new_zeros(())
        if s.clip_guidance_lambda and clip:
            with autocast_context(x.device, self.amp_dtype):
                distances = self._clip_distances(x_in, mask, generators)
            loss = loss + distances.float().sum() * s.clip_guidance_lambda
        if s.range_lambda:
            loss = loss + range_loss(pred_x0).sum() * s.range_lambda
        if self.background_loss:
            keep = 1 - mask
            source = (background * keep).expand_as(x_in)
            if s.lpips_sim_lambda:
                loss = loss + self.lpips(x_in * keep, source).sum() * s.lpips_sim_lambda
            if s.l2_sim_lambda:
                # per-image mean, summed: the reference's batch mean would scale each gradient by 1/batch
                squared = (x_in * keep - source).pow(2).mean(dim=(1, 2, 3))
                loss = loss + squared.sum() * s.l2_sim_lambda
        return loss

    def _clip_distances(self, x_in: torch.Tensor, mask: torch.Tensor, generators) -> torch.Tensor:
        """D_CLIP of the masked estimate to the prompt, or summed over the regions' masked squares."""
        if not self.regions:
            return clip_distances(self.clip, x_in * mask, self.text_embed, self.augment, generators)
        total = x_in.new_zeros(x_in.shape[0])
        for embed, region_mask, square in self.regions:
            total = total + self._region_distance(x_in, embed, region_mask, square, generators)
        return total

    def _region_distance(self, x_in, embed, region_mask, square, generators) -> torch.Tensor:
        """D_CLIP of one region's masked square (paper/regional.py) to its prompt: [B]."""
        top, left, side = square
        view = (x_in * region_mask)[..., top : top + side, left : left + side]
        return clip_distances(self.clip, view, embed, self.augment, generators).float()


def blended_diffusion(
    unet: torch.nn.Module,
    diffusion,
    init: torch.Tensor,
    mask: torch.Tensor,
    seeds: Sequence[int],
    skip_timesteps: int,
    *,
    settings: GuidanceSettings,
    guidance: Optional[ClipGuidance] = None,
    background: Optional[torch.Tensor] = None,
    class_labels: Optional[torch.Tensor] = None,
    on_step: Optional[StepCallback] = None,
    amp_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Edit ``init`` inside ``mask`` for each seed; returns the results [len(seeds), 3, H, W] in [-1, 1].

    init: [1, 3, H, W] in [-1, 1], where the diffusion starts (a scribbled image in scribble mode).
    background: [1, 3, H, W] (or one row per seed), the image kept outside the mask (default: init).
    mask: [1, 1, H, W] binary, 1 = edit.
    settings: the sampler's switches read here (ddim, local_clip_guided_diffusion, enforce_background).
    guidance: the prompt's ClipGuidance, or None for no guidance (empty prompt).
    on_step: called after every step; raising from it (e.g. engine.errors.Cancelled) ends the run there.
    amp_dtype: the UNet's autocast (None: none).
    """
    background = init if background is None else background
    device, batch = init.device, len(seeds)
    num_steps = diffusion.num_timesteps - skip_timesteps
    if num_steps < 1:
        raise ValueError(
            f"skip_timesteps ({skip_timesteps}) must be smaller than the number of timesteps "
            f"({diffusion.num_timesteps})"
        )
    generators = make_generators(seeds, device)
    blend = not settings.local_clip_guided_diffusion
    keep = 1 - mask

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        with autocast_context(device, amp_dtype):
            model_output = unet(x_t, diffusion.model_timesteps(t), class_labels)
        return diffusion.p_mean_variance(None, x_t, t, model_output=model_output.float())

    steps = list(range(num_steps))[::-1]
    init_batch = init.expand(batch, -1, -1, -1)
    t = torch.full((batch,), steps[0], device=device, dtype=torch.long)
    x = diffusion.q_sample(init_batch, t, noise=_noise(init_batch, generators))  # x_k: the noised input
    pred_x0 = init_batch
    region = dict(mask=mask, background=background, generators=generators)  # what the loss compares
    x0_space = guidance is not None and guidance.x0_space
    for step_number, index in enumerate(steps, start=1):
        t = torch.full((batch,), index, device=device, dtype=torch.long)
        # out = p_mean_variance(UNet(x_t, t)); g = -d loss / d x_t (none without a prompt)
        if guidance is None:
            with torch.no_grad():
                out, gradient = denoise(x, t), None
        else:
            fac = float(diffusion.sqrt_one_minus_alphas_cumprod[index])
            out, gradient = guidance.predict(denoise, x.detach(), t, fac, **region)
        # x_fg: the guided DDPM (or DDIM) step from that same out
        noise = _noise(x, generators)
        stepped = _step(
            diffusion, out, x.detach(), t, gradient, x0_space=x0_space, ddim=settings.ddim, noise=noise
        )
        x, pred_x0 = stepped["sample"], stepped["pred_xstart"]
        if blend:  # x_{t-1} = x_fg * m + x_bg * (1 - m), x_bg the background noised to level t, fresh noise
            x_bg = diffusion.q_sample(background.expand(batch, -1, -1, -1), t, noise=_noise(x, generators))
            x = x * mask + x_bg * keep
        if on_step is not None:
            guided = guidance is not None
            on_step(StepInfo(step_number, num_steps, index, pred_x0, guided=guided, batch=batch, x0=x0_space))
    if settings.enforce_background:
        return background * keep + pred_x0 * mask
    return pred_x0


def _step(diffusion, out: Prediction, x, t, gradient, *, x0_space: bool, ddim: bool, noise) -> Prediction:
    """x_{t-1} from the prediction shifted by ``gradient`` (None: unguided): DDPM or DDIM, in x_t space
    (the paper) or from the corrected clean estimate (``x0_space``)."""
    out = {key: value.detach() for key, value in out.items()}
    if gradient is not None and x0_space:
        return diffusion.x0_guided_step(out, x, t, gradient, ddim=ddim, noise=noise)
    if ddim:
        return diffusion.ddim_step(out, x, t, gradient=gradient)
    return diffusion.ddpm_step(out, x, t, gradient=gradient, noise=noise)
