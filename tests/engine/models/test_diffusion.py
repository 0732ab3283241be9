"""Diffusion math against closed forms: schedules, respacing, posterior, learned range, steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.models.diffusion import GaussianDiffusion, diffusion_from_flags, space_timesteps

FLAGS = {"diffusion_steps": 1000, "noise_schedule": "linear", "learn_sigma": True, "rescale_timesteps": True}


def linear_alpha_bar(t: int) -> float:
    """prod_{s<=t} (1 - beta_s), beta_s = 1e-4 + s * (0.02 - 1e-4) / 999, summed in log space."""
    return math.exp(sum(math.log1p(-(1e-4 + s * (0.02 - 1e-4) / 999)) for s in range(t + 1)))


def test_linear_alpha_bar_and_respaced_map():
    full = diffusion_from_flags(FLAGS)
    assert full.num_timesteps == 1000 and full.timestep_map == list(range(1000))
    for t in (0, 1, 500, 747, 999):
        assert full.alphas_cumprod[t] == pytest.approx(linear_alpha_bar(t), rel=1e-9)
    spaced = diffusion_from_flags({**FLAGS, "timestep_respacing": "100"})
    assert spaced.num_timesteps == 100
    assert spaced.timestep_map == [round(i * 999 / 99) for i in range(100)]
    assert spaced.timestep_map[74] == 747
    # respaced alpha-bar equals the original alpha-bar at the kept steps
    for i, t in enumerate(spaced.timestep_map):
        assert spaced.alphas_cumprod[i] == pytest.approx(full.alphas_cumprod[t], rel=1e-12)
    # the model is called with the ORIGINAL timestep on the 0..1000 scale
    scaled = spaced.model_timesteps(torch.tensor([0, 74, 99]))
    assert scaled.dtype == torch.float32 and scaled.tolist() == [0.0, 747.0, 999.0]
    assert spaced.unscale_timesteps(scaled).tolist() == [0, 74, 99]  # back to the respaced index
    raw = diffusion_from_flags({**FLAGS, "timestep_respacing": "100", "rescale_timesteps": False})
    assert raw.model_timesteps(torch.tensor([74])).tolist() == [747]


def test_cosine_schedule_closed_form():
    d = diffusion_from_flags({**FLAGS, "noise_schedule": "cosine"})

    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):
        assert d.alphas_cumprod[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert d.betas.max() <= 0.999


def test_respacing_forms():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    sections = sorted(space_timesteps(300, "10,20,30"))
    assert len(sections) == 60
    assert sections[0] == 0 and sections[9] == 99  # first section 0..99, both ends kept
    assert sections[10] == 100 and sections[29] == 199 and sections[-1] == 299
    assert space_timesteps(10, "10") == set(range(10))
    assert sorted(space_timesteps(1000, "25")) == [round(i * 999 / 24) for i in range(25)]
    for bad in ("ddim999", "ddimx", "abc", "2000", "0", "10,"):
        with pytest.raises(ValueError):
            space_timesteps(1000, bad)
    with pytest.raises(ValueError, match="noise_schedule"):
        diffusion_from_flags({**FLAGS, "noise_schedule": "quadratic"})


def test_posterior_and_learned_range_variance():
    d = diffusion_from_flags({**FLAGS, "timestep_respacing": "100"})
    abar = d.alphas_cumprod
    for t in (1, 40, 99):
        beta = 1 - abar[t] / abar[t - 1]  # respaced beta from consecutive kept alpha-bars
        assert d.betas[t] == pytest.approx(beta, rel=1e-12)
        assert d.posterior_variance[t] == pytest.approx(beta * (1 - abar[t - 1]) / (1 - abar[t]), rel=1e-12)
    assert d.posterior_variance[0] == 0
    assert d.posterior_log_variance_clipped[0] == pytest.approx(math.log(d.posterior_variance[1]))

    # posterior mean is the Gaussian product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0)
    x0, xt = torch.randn(1, 3, 4, 4, dtype=torch.float64), torch.randn(1, 3, 4, 4, dtype=torch.float64)
    t = 40
    beta, alpha = d.betas[t], 1 - d.betas[t]
    precision = alpha / beta + 1 / (1 - abar[t - 1])
    expected = (math.sqrt(alpha) / beta * xt + math.sqrt(abar[t - 1]) / (1 - abar[t - 1]) * x0) / precision
    mean, var, _ = d.q_posterior_mean_variance(x0.float(), xt.float(), torch.tensor([t]))
    torch.testing.assert_close(mean.double(), expected, rtol=1e-5, atol=1e-5)
    assert var[0, 0, 0, 0].item() == pytest.approx(1 / precision, rel=1e-5)

    # learned range: v = 1 -> log beta_t, v = -1 -> log posterior variance, v = 0 -> halfway in log space
    x = torch.zeros(3, 3, 2, 2)
    v = torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    out = d.p_mean_variance(
        None, x, torch.tensor([t] * 3), model_output=torch.cat([torch.zeros_like(x), v], 1)
    )
    log_var = out["log_variance"][:, 0, 0, 0].double()
    lo, hi = math.log(d.posterior_variance[t]), math.log(d.betas[t])
    torch.testing.assert_close(
        log_var, torch.tensor([hi, lo, (hi + lo) / 2], dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(out["variance"], out["log_variance"].exp())


def test_pred_xstart_from_true_noise_and_q_sample():
    d = diffusion_from_flags({**FLAGS, "timestep_respacing": "100"})
    torch.manual_seed(0)
    x0, noise = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    t = torch.tensor([74, 5])
    xt = d.q_sample(x0, t, noise)
    abar = torch.tensor(d.alphas_cumprod[[74, 5]], dtype=torch.float32).view(2, 1, 1, 1)
    torch.testing.assert_close(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    out = d.p_mean_variance(None, xt, t, model_output=torch.cat([noise, torch.zeros_like(noise)], 1))
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["eps"], noise)
    clipped = d.p_mean_variance(None, xt * 50, t, clip_denoised=True, model_output=torch.zeros(2, 6, 8, 8))
    assert clipped["pred_xstart"].abs().max() <= 1
    with pytest.raises(ValueError):
        d.q_sample(x0, t, noise[:1])


def test_model_called_once_at_original_timestep_and_output_reuse():
    d = diffusion_from_flags({**FLAGS, "timestep_respacing": "100"})
    calls = []

    def model(x, timesteps, y=None):
        calls.append((timesteps.tolist(), y))
        return torch.cat([x * 0.1, torch.full_like(x, 0.3)], dim=1)

    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([74, 0])
    out = d.p_mean_variance(model, x, t, model_kwargs={"y": 7})
    assert calls == [([747.0, 0.0], 7)]
    again = d.p_mean_variance(None, x, t, model_output=model(x, d.model_timesteps(t)))
    for key in ("mean", "variance", "log_variance", "pred_xstart", "eps"):
        torch.testing.assert_close(again[key], out[key])
    with pytest.raises(ValueError, match="6 channels"):
        d.p_mean_variance(None, x, t, model_output=x)


def test_guided_ddpm_step():
    d = diffusion_from_flags({**FLAGS, "timestep_respacing": "100"})
    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([74, 0])
    out = d.p_mean_variance(None, x, t, model_output=torch.randn(2, 6, 4, 4))
    gradient, noise = torch.randn_like(x), torch.randn_like(x)
    step = d.ddpm_step(out, x, t, gradient=gradient, noise=noise)
    guided_mean = out["mean"] + out["variance"] * gradient
    torch.testing.assert_close(step["mean"], guided_mean)
    torch.testing.assert_close(
        step["sample"][0], (guided_mean + (0.5 * out["log_variance"]).exp() * noise)[0]
    )
    torch.testing.assert_close(step["sample"][1], guided_mean[1])  # no noise at t == 0
    plain = d.ddpm_step(out, x, t, noise=noise)
    torch.testing.assert_close(plain["mean"], out["mean"])


def test_ddim_step_eta0_with_and_without_guidance():
    d = diffusion_from_flags({**FLAGS, "timestep_respacing": "ddim50"})
    torch.manual_seed(1)
    x0, noise = torch.rand(1, 3, 4, 4) * 2 - 1, torch.randn(1, 3, 4, 4)
    t = torch.tensor([30])
    xt = d.q_sample(x0, t, noise)
    out = d.p_mean_variance(None, xt, t, model_output=torch.cat([noise, torch.zeros_like(noise)], 1))
    step = d.ddim_step(out, xt, t)
    abar_prev = float(d.alphas_cumprod_prev[30])
    # with the true noise, deterministic DDIM lands on the same noise at t-1
    torch.testing.assert_close(
        step["sample"], math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * noise, rtol=1e-4, atol=1e-4
    )
    gradient = torch.randn_like(xt)
    guided = d.ddim_step(out, xt, t, gradient=gradient)
    abar = float(d.alphas_cumprod[30])
    eps = noise - math.sqrt(1 - abar) * gradient
    x0_guided = (xt - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    torch.testing.assert_close(guided["pred_xstart"], x0_guided, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        guided["sample"],
        math.sqrt(abar_prev) * x0_guided + math.sqrt(1 - abar_prev) * eps,
        rtol=1e-4,
        atol=1e-4,
    )


def test_fixed_variance_without_learned_sigma():
    d = GaussianDiffusion(np.linspace(1e-4, 0.02, 1000), learn_sigma=False)
    x = torch.zeros(1, 3, 2, 2)
    out = d.p_mean_variance(None, x, torch.tensor([500]), model_output=torch.zeros_like(x))
    assert out["variance"][0, 0, 0, 0].item() == pytest.approx(d.betas[500], rel=1e-6)
    with pytest.raises(ValueError):
        GaussianDiffusion(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="not supported"):
        diffusion_from_flags({**FLAGS, "predict_xstart": True})
