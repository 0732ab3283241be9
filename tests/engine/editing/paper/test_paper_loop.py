"""The paper's loop (Algorithm 2, blended.blended_diffusion) against two steps computed by hand: a linear
UNet stand-in, a linear CLIP stand-in and the paper's loss, its gradient w.r.t. x_t derived here with plain
tensor ops (no autograd), the guided DDPM step and the blend, in float64 from the schedule's own numbers."""

from __future__ import annotations

import math

import torch

from engine.editing.paper.blended import ClipGuidance, GuidanceSettings, blended_diffusion
from engine.editing.shared.params import EditParams
from engine.models.diffusion import GaussianDiffusion, get_named_beta_schedule, space_timesteps

A, B = 0.3, 0.05  # the stand-in UNet: eps = A x_t + B, no learned variance
SHAPE = (3, 4, 4)


class LinearEps(torch.nn.Module):
    def forward(self, x, t, y=None):
        return A * x + B


class LinearClip:
    """encode_image(v) = flatten(v) @ W: a CLIP whose gradient is a matrix product."""

    image_size = 4

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def encode_image(self, views: torch.Tensor) -> torch.Tensor:
        return views.flatten(1) @ self.weight


class NoAugment:
    """One view, the image itself (and no random draws): the augmentations' stand-in."""

    aug_num = 1

    def __call__(self, images, generators=None):
        return images


def _guided_step_by_hand(diffusion, x, t, mask, weight, text, lambdas):
    """(mean of the guided DDPM step, its variance, pred_x0) at respaced step ``t``, all float64."""
    clip_lambda, range_lambda = lambdas
    abar = float(diffusion.alphas_cumprod[t])
    eps = A * x + B
    pred_x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    k = (1 - math.sqrt(1 - abar) * A) / math.sqrt(abar)  # d pred_x0 / d x_t
    fac = math.sqrt(1 - abar)
    x_in = pred_x0 * fac + x * (1 - fac)
    m = fac * k + 1 - fac  # d x_in / d x_t
    # D_CLIP = 2 arcsin(|n - y| / 2)^2, n = u / |u|, u = flatten((x_in * mask + 1) / 2) @ W
    u = ((x_in * mask + 1) / 2).flatten() @ weight
    n, y = u / u.norm(), text / text.norm()
    s = (n - y).norm()
    theta = torch.arcsin(s / 2)
    d_n = 2 * theta * (n - y) / (s * torch.sqrt(1 - s**2 / 4))
    d_u = (d_n - n * (n @ d_n)) / u.norm()  # through the normalisation
    d_x_clip = clip_lambda * m * mask * 0.5 * (weight @ d_u).reshape(SHAPE)
    # range loss = mean((pred_x0 - clamp(pred_x0))^2)
    d_x_range = range_lambda * k * 2 * (pred_x0 - pred_x0.clamp(-1, 1)) / pred_x0.numel()
    gradient = -(d_x_clip + d_x_range)
    mean = diffusion.posterior_mean_coef1[t] * pred_x0 + diffusion.posterior_mean_coef2[t] * x
    variance = float(diffusion.fixed_large_variance[t])
    return mean + variance * gradient, variance, pred_x0, d_x_clip


def test_two_steps_of_algorithm_2_equal_the_hand_computed_ones():
    steps, skip, seed = 20, 18, 5
    diffusion = GaussianDiffusion(
        get_named_beta_schedule("linear", 1000), space_timesteps(1000, str(steps)), learn_sigma=False
    )
    init = torch.linspace(-1.4, 1.4, 48).reshape(1, *SHAPE)  # partly out of range: the range loss pushes
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 0:3] = 1  # a blend with the noised background outside
    weight = torch.randn(48, 5, generator=torch.Generator().manual_seed(1))
    text = torch.nn.functional.normalize(torch.tensor([[1.0, -0.5, 0.25, 2.0, 0.0]]), dim=-1)
    lambdas = (40.0, 50.0)
    params = EditParams(clip_guidance_lambda=lambdas[0], range_lambda=lambdas[1])
    settings = GuidanceSettings.from_params(params)
    guidance = ClipGuidance(LinearClip(weight), text, NoAugment(), settings)
    got = blended_diffusion(
        LinearEps(), diffusion, init, mask, [seed], skip, settings=settings, guidance=guidance
    )

    # by hand: the candidate's generator draws the start noise, then per step the step's and the background's
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(SHAPE, generator=generator).double()  # noqa: E731
    source, keep, m = init[0].double(), 1 - mask[0].double(), mask[0].double()
    first = steps - skip - 1
    abar = diffusion.alphas_cumprod
    x = math.sqrt(abar[first]) * source + math.sqrt(1 - abar[first]) * draw()  # x_k
    pushes = []
    for t in range(first, -1, -1):
        mean, variance, pred_x0, d_x_clip = _guided_step_by_hand(
            diffusion, x, t, m, weight.double(), text[0].double(), lambdas
        )
        pushes.append(d_x_clip.abs().max())
        x_fg = mean + (t != 0) * math.sqrt(variance) * draw()
        x_bg = math.sqrt(abar[t]) * source + math.sqrt(1 - abar[t]) * draw()  # the background at level t
        x = x_fg * m + x_bg * keep
    want = source * keep + pred_x0 * m  # the background exactly as it was
    assert min(pushes) > 1e-3  # the CLIP term did push at both steps
    torch.testing.assert_close(got[0].double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[0] * keep.float(), init[0] * keep.float())
