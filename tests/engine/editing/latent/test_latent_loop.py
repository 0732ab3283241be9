"""Blended Latent Diffusion's loop (engine/editing/latent/blended_latent.py) against the algorithm
computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from engine.editing.latent import blended_latent as bld

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


class ConstantUNet(torch.nn.Module):
    """eps = 0.3 for the unconditional half, 0.5 for the conditional one (their states differ in sign)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls: list = []

    def forward(self, z, t, encoder_hidden_states):
        self.calls.append((z.shape[0], int(t)))
        value = torch.where(encoder_hidden_states[:, 0, 0] > 0, 0.5, 0.3)
        return type("Out", (), {"sample": value[:, None, None, None].expand_as(z) + self.weight})()


def _by_hand(source, mask, seeds, steps, skip, scale):
    """DDIM (eta 0) written out from alphas_cumprod, with the blend at the next timestep and a clean last."""
    abar = _scheduler().alphas_cumprod.double()
    stride = 1000 // steps
    timesteps = [t + 1 for t in range(0, 1000, stride)][::-1][skip:]  # steps_offset 1
    eps = 0.3 + scale * (0.5 - 0.3)
    out = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        src = source[0].double()
        noise = torch.randn(tuple(source.shape[1:]), generator=g).double()
        t0 = timesteps[0]
        z = math.sqrt(abar[t0]) * src + math.sqrt(1 - abar[t0]) * noise
        for i, t in enumerate(timesteps):
            prev = t - stride
            a_t, a_prev = abar[t], abar[prev] if prev >= 0 else abar[0]
            x0 = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
            if i + 1 < len(timesteps):
                fresh = torch.randn(tuple(source.shape[1:]), generator=g).double()
                nxt = timesteps[i + 1]
                background = math.sqrt(abar[nxt]) * src + math.sqrt(1 - abar[nxt]) * fresh
            else:
                background = src
            z = z * mask[0].double() + background * (1 - mask[0].double())
        out.append(z)
    return torch.stack(out).float()


def _run(num_steps, skip, cond, uncond, guidance_scale):
    """The schedule and conditioning keywords of blended_latent_diffusion."""
    return dict(num_steps=num_steps, skip=skip, cond=cond, uncond=uncond, guidance_scale=guidance_scale)


def _states():
    cond = torch.ones(1, 3, 4)
    return cond, -cond  # the fake UNet tells them apart by the sign


def test_loop_matches_the_hand_computed_algorithm():
    torch.manual_seed(0)
    source = torch.randn(1, 4, 6, 6)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 1:4, 2:5] = 1
    cond, uncond = _states()
    unet = ConstantUNet()
    got = bld.blended_latent_diffusion(
        unet, _scheduler(), source, [mask], [3, 9], **_run(10, 2, cond, uncond, 7.5)
    )
    want = _by_hand(source, mask, [3, 9], 10, 2, 7.5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the last blend is clean: outside the mask the source itself, bit for bit
    assert torch.equal(got * (1 - mask), source.expand_as(got) * (1 - mask))
    assert unet.calls == [(4, t) for t in (701, 601, 501, 401, 301, 201, 101, 1)]  # CFG: one doubled call


def test_background_is_noised_to_the_next_timestep_each_step():
    source = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    cond, uncond = _states()
    seen = []
    bld.blended_latent_diffusion(
        ConstantUNet(),
        _scheduler(),
        source,
        [mask],
        [7],
        **_run(5, 1, cond, uncond, 2.0),
        on_step=seen.append,
    )
    abar = _scheduler().alphas_cumprod
    g = torch.Generator().manual_seed(7)
    torch.randn(4, 4, 4, generator=g)  # the start noise
    next_timesteps = [601, 401, 201, 1]  # after the steps at 801, 601, 401, 201
    assert [s.step for s in seen] == [1, 2, 3, 4] and all(s.total == 4 for s in seen)
    for info, t in zip(seen[:-1], next_timesteps[1:]):
        fresh = torch.randn(4, 4, 4, generator=g)
        want = abar[t].sqrt() * source[0] + (1 - abar[t]).sqrt() * fresh
        torch.testing.assert_close(info.latents[0] * (1 - mask[0]), want * (1 - mask[0]))
    assert torch.equal(seen[-1].latents[0] * (1 - mask[0]), source[0] * (1 - mask[0]))


def test_shrinking_masks_and_their_phases():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8, 8] = 1  # a one-cell selection: thinner than anything the model draws
    masks = bld.shrinking_masks(mask, True)
    assert [int(m.sum()) for m in masks] == [49, 25, 9, 1]  # kernels 7, 5, 3, then the true mask
    assert masks[0][0, 0, 5:12, 5:12].all() and not masks[0][0, 0, 4, 8]
    assert bld.shrinking_masks(mask, False) == [mask]
    # four equal phases over 8 steps; over 38 steps (the default schedule) 10, 9, 10, 9
    assert [int(bld.phase_mask(masks, i, 8).sum()) for i in range(8)] == [49, 49, 25, 25, 9, 9, 1, 1]
    counts = [int(bld.phase_mask(masks, i, 38).sum()) for i in range(38)]
    assert [counts.count(n) for n in (49, 25, 9, 1)] == [10, 9, 10, 9]


def test_each_step_blends_with_its_phase_mask():
    source = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8, 8] = 1
    masks = bld.shrinking_masks(mask, True)
    cond, uncond = _states()
    seen = []
    bld.blended_latent_diffusion(
        ConstantUNet(), _scheduler(), source, masks, [0], **_run(8, 0, cond, uncond, 1.0), on_step=seen.append
    )
    abar = _scheduler().alphas_cumprod
    g = torch.Generator().manual_seed(0)
    torch.randn(4, 16, 16, generator=g)  # the start noise
    next_timesteps = [751, 626, 501, 376, 251, 126, 1]  # 8 steps of 125 from 876
    for index, info in enumerate(seen):
        phase = masks[index * 4 // 8][0, 0] > 0
        if index + 1 < len(seen):
            t = next_timesteps[index]
            background = abar[t].sqrt() * source[0] + (1 - abar[t]).sqrt() * torch.randn(
                4, 16, 16, generator=g
            )
        else:
            background = source[0]
        torch.testing.assert_close(info.latents[0][:, ~phase], background[:, ~phase])
        assert (info.latents[0][:, phase] - background[:, phase]).abs().min() > 0, index  # edited there


def test_seeds_make_the_same_candidates_however_batched():
    source = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 1, 4, 4)
    mask[..., 0, :] = 0
    cond, uncond = _states()
    run = lambda seeds: bld.blended_latent_diffusion(  # noqa: E731
        ConstantUNet(), _scheduler(), source, [mask], seeds, **_run(6, 2, cond, uncond, 3.0)
    )
    together = run([11, 12])
    assert torch.equal(together[1:], run([12])) and torch.equal(together[:1], run([11]))
    assert not torch.equal(together[0], together[1])


def test_without_a_prompt_one_unconditional_call_a_step():
    unet = ConstantUNet()
    cond, uncond = _states()
    out = bld.blended_latent_diffusion(
        unet,
        _scheduler(),
        torch.zeros(1, 4, 2, 2),
        [torch.ones(1, 1, 2, 2)],
        [1],
        **_run(4, 0, None, uncond, 7.5),
    )
    assert [batch for batch, _ in unet.calls] == [1, 1, 1, 1]
    assert out.shape == (1, 4, 2, 2)


@pytest.fixture
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=1,
    ).eval()


def test_background_reconstruction_fits_the_original_outside(tiny_vae):
    torch.manual_seed(1)
    original = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    latents = bld.encode(tiny_vae, original)
    plain = bld.decode(tiny_vae, latents)
    before = {k: v.clone() for k, v in tiny_vae.state_dict().items()}
    rebuilt = bld.reconstruct_background(tiny_vae, latents, plain, original, mask, steps=30, lr=1e-3)
    outside = lambda image: ((image - original) ** 2 * (1 - mask)).mean()  # noqa: E731
    assert outside(rebuilt) < 0.5 * outside(plain)
    assert all(
        torch.equal(v, tiny_vae.state_dict()[k]) for k, v in before.items()
    )  # the shared VAE untouched


def test_latent_mask_is_nearest_on_the_grid():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    grid = bld.latent_mask(mask, 4)
    assert grid[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
