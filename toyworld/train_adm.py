"""Train the toy ADM: the engine's UNet (learned sigma) with the engine's diffusion schedule.

Loss is improved DDPM's "hybrid": the simple epsilon MSE plus the variational bound term that trains only
the learned-range variance (the mean is detached inside it), so the sigma head gets a real objective.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from engine.models.diffusion import GaussianDiffusion, diffusion_from_flags
from engine.models.unet import unet_from_flags
from toyworld.data import crop_bank, scene_bank

# guided-diffusion flag names, the same keys the published checkpoints' specs use
TOY_MODEL_FLAGS: dict = {
    "image_size": 32,
    "num_channels": 32,
    "channel_mult": "1,2,2",
    "num_res_blocks": 1,
    "attention_resolutions": "8",
    "num_head_channels": 32,
    "num_heads": 1,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
    "use_new_attention_order": False,
    "learn_sigma": True,
    "class_cond": False,
    "dropout": 0.0,
    "use_fp16": False,
}
TOY_DIFFUSION_FLAGS: dict = {
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "learn_sigma": True,
    "rescale_timesteps": True,
    "timestep_respacing": "",
}


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood of 8-bit pixels x in [-1, 1] (bins of width 2/255) under N(mean, e^(2 log_scale))."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_minus = _standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


def hybrid_loss(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over the batch of eps MSE + VLB term (bits/dim); returns (loss, mse, vb)."""
    x_t = diffusion.q_sample(x_start, t, noise)
    output = model(x_t, diffusion.model_timesteps(t)).float()  # the losses in fp32 under autocast too
    eps, var_values = torch.split(output, 3, dim=1)
    mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
    # The VLB term trains only the variance head: the mean comes from a detached epsilon.
    frozen = torch.cat([eps.detach(), var_values], dim=1)
    out = diffusion.p_mean_variance(None, x_t, t, model_output=frozen)
    true_mean, _, true_log_variance = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]).mean(dim=(1, 2, 3))
    nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"]).mean(
        dim=(1, 2, 3)
    )
    vb = torch.where(t == 0, nll, kl) / math.log(2.0)
    # improved DDPM scales the term by T/1000 so its weight matches lambda = 0.001 on the full bound
    vb = vb * (diffusion.num_timesteps / 1000.0)
    return (mse + vb).mean(), mse.mean(), vb.mean()


def train_adm(
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    bank_size: int = 20000,
    lr: float = 2e-3,
    ema_decay: float = 0.99,
    bf16: bool = False,
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    """Train and return the EMA copy of the UNet (what sampling uses).

    bf16: run the UNet under CPU bf16 autocast (1.4-1.6x faster where the CPU has native bf16: AMX or
    AVX-512 BF16); the weights, the optimiser and the loss stay in fp32.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    size = int(TOY_MODEL_FLAGS["image_size"])
    images, _ = scene_bank(bank_size, size, seed + 1000)
    model = unet_from_flags(TOY_MODEL_FLAGS)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    _fit(model, ema, images, generator, steps, batch_size, lr, ema_decay, bf16, log, "adm")
    return ema


def train_multiscale(
    base: torch.nn.Module,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    scene_count: int = 10000,
    crop_count: int = 10000,
    lr: float = 5e-4,
    ema_decay: float = 0.995,
    bf16: bool = False,
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    """Go on training ``base`` (left unchanged) on whole scenes mixed with crops of scenes drawn 2-8x larger.

    The detail stage denoises model-size tiles of a candidate upscaled into a large selection: shapes
    larger than the tile, long outlines, flat patches, which whole 32 px scenes never show. Whole scenes
    stay in the mix (``scene_count`` of ``scene_count + crop_count``) so the first pass keeps its prior.
    """
    torch.manual_seed(seed + 2)
    generator = torch.Generator().manual_seed(seed + 3)
    size = int(TOY_MODEL_FLAGS["image_size"])
    scenes, _ = scene_bank(scene_count, size, seed + 2000)
    images = torch.cat([scenes, crop_bank(crop_count, size, seed + 3000)])
    model = copy.deepcopy(base).requires_grad_(True)
    ema = copy.deepcopy(base).eval().requires_grad_(False)
    # the EMA starts at the trained base, so it may average from the first step on
    _fit(
        model,
        ema,
        images,
        generator,
        steps,
        batch_size,
        lr,
        ema_decay,
        bf16,
        log,
        "multiscale",
        ema_warm=True,
    )
    return ema


def _fit(
    model: torch.nn.Module,
    ema: torch.nn.Module,
    images: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    bf16: bool,
    log: Callable[[str], None],
    name: str,
    ema_warm: bool = False,
) -> None:
    """The training loop: hybrid loss on random flipped picks of ``images`` (uint8), warm-up then cosine lr,
    gradient clipping, and an EMA copy of the weights in ``ema``."""
    diffusion = diffusion_from_flags(TOY_DIFFUSION_FLAGS)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 25)
    start = time.time()
    history: list[float] = []
    for step in range(steps):
        # linear warm-up, then cosine down to a tenth
        progress = max(0.0, (step - warmup) / max(1, steps - warmup))
        scale = (step + 1) / warmup if step < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimiser.param_groups:
            group["lr"] = lr * scale
        pick = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x_start = images[pick].float() / 127.5 - 1.0
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x_start = torch.where(flip.view(-1, 1, 1, 1), x_start.flip(3), x_start)
        t = torch.randint(0, diffusion.num_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(x_start.shape, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, mse, vb = hybrid_loss(model, diffusion, x_start, t, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        decay = ema_decay if ema_warm else min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        history.append(mse.item())
        if step % 25 == 0 or step == steps - 1:
            recent = float(np.mean(history[-25:]))
            log(f"{name} step {step}/{steps} mse {recent:.4f} vb {vb.item():.4f} {time.time() - start:.0f}s")


@torch.no_grad()
def sample(model: torch.nn.Module, count: int, respacing: str = "50", seed: int = 0) -> torch.Tensor:
    """Plain ancestral samples in [-1, 1] with the engine's respaced diffusion (for checking the model)."""
    diffusion = diffusion_from_flags({**TOY_DIFFUSION_FLAGS, "timestep_respacing": respacing})
    generator = torch.Generator().manual_seed(seed)
    size = int(TOY_MODEL_FLAGS["image_size"])
    x = torch.randn((count, 3, size, size), generator=generator)
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((count,), i, dtype=torch.long)
        out = diffusion.p_mean_variance(model, x, t, clip_denoised=True)
        x = diffusion.ddpm_step(out, x, t, noise=torch.randn(x.shape, generator=generator))["sample"]
    return x.clamp(-1, 1)
