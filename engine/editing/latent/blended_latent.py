"""Blended Latent Diffusion (Avrahami, Fried, Lischinski, SIGGRAPH 2023), as the algorithm reads:

  z_src   = E(x).mean * scaling_factor                    the source in the VAE's latent space
  m       = the selection on the latent grid (nearest)    with dilated copies for the first phases
  z       = the source (or scribble) latent noised to the first kept timestep
  for each DDIM timestep t_i (strength 0.75: 38 of 50; or a latent consistency model's few LCM steps):
      eps = eps(z, t_i, "") + w * (eps(z, t_i, prompt) - eps(z, t_i, ""))   classifier-free guidance
      z   = DDIM step from t_i to t_{i+1}  (LCM: its estimate of z_0, noised afresh to t_{i+1})
      z   = z * m_i + bg * (1 - m_i),  bg = z_src noised to t_{i+1} with fresh noise, or z_src itself
            after the last step (no noise left in the background)
  x'      = D(z), optionally with a decoder fine-tuned to the source outside the mask (background
            reconstruction)

Where the authors' code differs the paper is followed: the blend noises to the step's next timestep, the
last blend is clean, the SD script's start from pure noise is not copied. The product's composite (the
source exactly outside the selection) follows in engine/editing/latent/edit.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F

SHRINK_KERNELS = (7, 5, 3)  # the paper's dilations, largest first; the true mask is the last phase
RECONSTRUCT_STEPS = 75
RECONSTRUCT_LR = 1e-4
RECONSTRUCT_OUTSIDE_WEIGHT = 100.0


@dataclass
class LatentStep:
    """What one step tells the caller: the step (1-based) of ``total``, the batch size, the latents."""

    step: int
    total: int
    batch: int
    latents: torch.Tensor


def encode(vae, images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] -> scaled latents: the distribution's mean, as the authors use."""
    with torch.no_grad():
        mean = vae.encode(images.to(vae.dtype)).latent_dist.mean
    return mean * vae.config.scaling_factor


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()


def latent_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """The binary pixel mask [1, 1, H, W] on the latent grid, by nearest neighbour (the authors')."""
    return F.interpolate(mask.float(), size=(size, size), mode="nearest")


def shrinking_masks(mask: torch.Tensor, shrink: bool) -> List[torch.Tensor]:
    """The masks of the phases: dilated by each kernel (all-ones, largest first), then the true mask."""
    if not shrink:
        return [mask]
    dilated = [F.max_pool2d(mask, k, stride=1, padding=k // 2) for k in SHRINK_KERNELS]
    return [*dilated, mask]


def phase_mask(masks: Sequence[torch.Tensor], index: int, steps: int) -> torch.Tensor:
    """The mask of step ``index`` (0-based) of ``steps``: equal consecutive shares for each phase."""
    return masks[min(index * len(masks) // steps, len(masks) - 1)]


def seeded_noise(shape: Sequence[int], seeds: Sequence[int], device, generators=None) -> torch.Tensor:
    """One noise tensor per candidate, each from its own seed's generator: a batch split differently
    makes the same candidates."""
    gens = generators or [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]).to(device), gens


def _parts(conditioning):
    """(encoder states, added_cond_kwargs or None) of a Conditioning, or of bare encoder states."""
    if isinstance(conditioning, torch.Tensor):
        return conditioning, None
    return conditioning.states, conditioning.added


def _batched(parts: Sequence, batch: int):
    """The conditionings' states and added kwargs, each repeated ``batch`` times and stacked in order."""
    states = torch.cat([p[0].expand(batch, *p[0].shape[1:]) for p in parts])
    if parts[0][1] is None:
        return states, {}
    added = {k: torch.cat([p[1][k].expand(batch, *p[1][k].shape[1:]) for p in parts]) for k in parts[0][1]}
    return states, {"added_cond_kwargs": added}


def guided_eps(unet, z: torch.Tensor, t, cond, uncond, scale: float) -> torch.Tensor:
    """Classifier-free guidance; one UNet call on the doubled batch (none doubled without a prompt, or at
    scale 1, where the guided prediction is the prompted one: a distilled model's guidance is folded in).

    cond / uncond: engine.models.latent.Conditioning, or bare encoder states [1, T, D]."""
    batch = z.shape[0]
    if cond is None or scale == 1.0:
        states, extra = _batched([_parts(uncond if cond is None else cond)], batch)
        return unet(z, t, encoder_hidden_states=states, **extra).sample
    states, extra = _batched([_parts(uncond), _parts(cond)], batch)
    eps_uncond, eps_cond = unet(torch.cat([z, z]), t, encoder_hidden_states=states, **extra).sample.chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


@torch.no_grad()
def blended_latent_diffusion(
    unet,
    scheduler,
    source: torch.Tensor,
    masks,
    seeds: Sequence[int],
    *,
    num_steps: int,
    skip: int,
    cond,
    uncond,
    guidance_scale: float,
    init: Optional[torch.Tensor] = None,
    on_step: Optional[Callable[[LatentStep], None]] = None,
) -> torch.Tensor:
    """Latents [len(seeds), C, h, w] edited inside the masks; outside the last mask exactly ``source``.

    source: the source's scaled latent [1, C, h, w]; masks: the phases' masks [1, 1, h, w] (shrinking_masks),
    or an object whose ``at(index, steps)`` gives each step's (latent/change_map.py: Differential Diffusion);
    num_steps DDIM steps of which the first ``skip`` are skipped (strength 1 - skip / num_steps);
    cond / uncond: the conditioning on the prompt (None: no guidance) and on "" (Conditioning, or text
    encoder states [1, T, D]);
    init: where the diffusion starts (a scribble's latent), the source when None.
    """
    scheduler.set_timesteps(num_steps, device=source.device)
    timesteps = scheduler.timesteps[skip:]
    shape = source.shape[1:]
    dtype = next(unet.parameters()).dtype
    noise, generators = seeded_noise(shape, seeds, source.device)
    start = (source if init is None else init).expand(len(seeds), -1, -1, -1)
    z = scheduler.add_noise(start, noise, timesteps[:1])
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        eps = guided_eps(unet, z.to(dtype), t, cond, uncond, guidance_scale).to(z.dtype)
        z = scheduler.step(eps, t, z, generator=generators).prev_sample  # LCM re-noises: seeded per candidate
        if index + 1 < total:
            fresh, _ = seeded_noise(shape, seeds, source.device, generators)
            background = scheduler.add_noise(source.expand_as(z), fresh, timesteps[index + 1 : index + 2])
        else:
            background = source.expand_as(z)  # the last blend is clean: no noise left outside
        mask = masks.at(index, total) if hasattr(masks, "at") else phase_mask(masks, index, total)
        z = z * mask + background * (1 - mask)
        if on_step is not None:
            on_step(LatentStep(index + 1, total, len(seeds), z))
    return z


def reconstruct_background(
    vae,
    latents: torch.Tensor,
    result: torch.Tensor,
    original: torch.Tensor,
    mask: torch.Tensor,
    steps: int = RECONSTRUCT_STEPS,
    lr: float = RECONSTRUCT_LR,
) -> torch.Tensor:
    """Background reconstruction (paper section 4.3): decode one candidate's latents [1, C, h, w] with a
    copy of the decoder fine-tuned for this image: MSE to the decoded ``result`` inside the pixel ``mask``
    plus 100 x MSE to the ``original`` outside, Adam at 1e-4 for 75 steps. The shared VAE is untouched."""
    post_quant = copy.deepcopy(vae.post_quant_conv) if vae.post_quant_conv is not None else None
    decoder = copy.deepcopy(vae.decoder).float().train().requires_grad_(True)
    z = (latents.float() / vae.config.scaling_factor).detach()
    if post_quant is not None:
        with torch.no_grad():
            z = post_quant.float()(z)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    result, original, mask = result.float(), original.float(), mask.float()
    with torch.enable_grad():
        for _ in range(steps):
            out = decoder(z)
            inside = ((out - result) ** 2 * mask).mean()
            outside = ((out - original) ** 2 * (1 - mask)).mean()
            loss = inside + RECONSTRUCT_OUTSIDE_WEIGHT * outside
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return decoder.eval()(z)
