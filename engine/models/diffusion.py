"""Gaussian diffusion (DDPM / DDIM) with respacing, as the ADM checkpoints were trained and sampled.

Conventions kept from guided-diffusion so results compare number for number:
- ``t`` passed to every method is the *respaced* index (0 .. num_timesteps-1);
- the model is called with the ORIGINAL timestep (``timestep_map[t]``), on the 0..1000 scale when
  ``rescale_timesteps`` is set;
- schedule arithmetic is float64 numpy; each array is cast to float32 once and kept on the device it is
  used on (``table``), so a step gathers from device memory: no float64 tensor ever reaches a device
  (Apple MPS has no float64) and no step waits on a host-to-device copy. Casting before the gather gives
  the same float32 values as gathering in float64 and casting after.

Guidance: ``gradient`` arguments are the guidance direction the reference's ``cond_fn`` returns, i.e.
MINUS the gradient of the guidance loss with respect to x_t.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np
import torch

ModelFn = Callable[..., torch.Tensor]


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Linear (scaled so any step count matches the 1000-step schedule) or cosine (Nichol & Dhariwal)."""
    if num_diffusion_timesteps < 1:
        raise ValueError("diffusion_steps must be at least 1")
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown noise_schedule {schedule_name!r} (use 'linear' or 'cosine')")


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999):
    betas = []
    for i in range(num_timesteps):
        t1, t2 = i / num_timesteps, (i + 1) / num_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: Union[str, list[int]]) -> set[int]:
    """Original timesteps kept by a respacing: "100", "10,20,30" (equal sections) or "ddimN" (stride).

    Each section keeps ``count`` steps spread evenly over it, both ends included; the running float
    index is accumulated and rounded exactly like the reference so the kept steps are identical.
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            desired = int(spec[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot make exactly {desired} evenly strided steps from {num_timesteps}")
        try:
            counts = [int(x) for x in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad timestep_respacing {section_counts!r}: use e.g. '100', 'ddim50'") from None
    else:
        counts = list(section_counts)
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    steps: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return set(steps)


def _broadcast(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-sample values [B] broadcast to ``shape`` (batch first)."""
    return values.reshape(values.shape + (1,) * (len(shape) - values.ndim)).expand(shape)


class GaussianDiffusion:
    """Diffusion over a (possibly respaced) schedule.

    ``betas`` are the ORIGINAL schedule; ``use_timesteps`` the kept original steps (all when None).
    ``learn_sigma``: the model outputs 2*C channels, the second half v giving the learned-range variance;
    otherwise the fixed-large variance (the reference's default without learned sigma).
    """

    def __init__(
        self,
        betas: np.ndarray,
        use_timesteps: Optional[set[int]] = None,
        learn_sigma: bool = True,
        rescale_timesteps: bool = True,
    ):
        base_betas = np.asarray(betas, dtype=np.float64)
        if base_betas.ndim != 1 or not ((base_betas > 0) & (base_betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.original_num_steps = len(base_betas)
        if use_timesteps is None:
            use_timesteps = set(range(self.original_num_steps))
        if not use_timesteps or min(use_timesteps) < 0 or max(use_timesteps) >= self.original_num_steps:
            raise ValueError("respaced timesteps must lie in 0 .. diffusion_steps-1")
        # new betas reproduce the kept alpha-bar values exactly
        base_alphas_cumprod = np.cumprod(1.0 - base_betas)
        self.timestep_map: list[int] = []
        new_betas = []
        last = 1.0
        for i, alpha_cumprod in enumerate(base_alphas_cumprod):
            if i in use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                self.timestep_map.append(i)
        self.learn_sigma = learn_sigma
        self.rescale_timesteps = rescale_timesteps
        self._tables: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._set_schedule(np.array(new_betas, dtype=np.float64))

    def _set_schedule(self, betas: np.ndarray) -> None:
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # posterior variance is 0 at t=0; the log uses the t=1 value there
        if self.num_timesteps > 1:
            self.posterior_log_variance_clipped = np.log(
                np.append(self.posterior_variance[1], self.posterior_variance[1:])
            )
        else:
            self.posterior_log_variance_clipped = np.log(np.maximum(self.posterior_variance, 1e-20))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        # fixed-large variance, used when the model does not learn sigma
        self.fixed_large_variance = np.append(self.posterior_variance[1:2], betas[1:])
        self.log_betas = np.log(betas)
        self.log_fixed_large_variance = np.log(self.fixed_large_variance)
        self._tables.clear()

    def table(self, name: str, device: Union[torch.device, str]) -> torch.Tensor:
        """The float64 schedule array ``name`` as a float32 tensor on ``device``, made once per device.

        The cast happens on the CPU, before the move: Apple MPS cannot hold float64.
        """
        device = torch.device(device)
        key = (name, device)
        if key not in self._tables:
            values = torch.from_numpy(np.asarray(getattr(self, name), dtype=np.float64))
            self._tables[key] = values.float().to(device)
        return self._tables[key]

    def _extract(self, name: str, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """schedule[name][t] as float32, broadcast to ``shape``; a gather on t's device, no host copy."""
        return _broadcast(self.table(name, t.device)[t], shape)

    # ---- timesteps -------------------------------------------------------------------------------------

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced index -> what the model is called with: the original step, rescaled to 0..1000."""
        key = ("model_timesteps", t.device)
        if key not in self._tables:
            mapped = torch.tensor(self.timestep_map, dtype=torch.long)
            if self.rescale_timesteps:
                mapped = mapped.float() * (1000.0 / self.original_num_steps)
            self._tables[key] = mapped.to(t.device)
        return self._tables[key][t]

    def unscale_timesteps(self, model_t: torch.Tensor) -> torch.Tensor:
        """The reference guidance code's inverse of ``model_timesteps``: t * num_timesteps / 1000,
        truncated (that truncation recovers the respaced index, e.g. 747 -> 74 for "100")."""
        if self.rescale_timesteps:
            model_t = model_t.float() * (self.num_timesteps / 1000.0)
        return model_t.long()

    # ---- forward process -------------------------------------------------------------------------------

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Sample q(x_t | x_0): sqrt(abar) x0 + sqrt(1 - abar) noise."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start shape {tuple(x_start.shape)}")
        return (
            self._extract("sqrt_alphas_cumprod", t, x_start.shape) * x_start
            + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._extract("posterior_mean_coef1", t, x_t.shape) * x_start
            + self._extract("posterior_mean_coef2", t, x_t.shape) * x_t
        )
        return (
            mean,
            self._extract("posterior_variance", t, x_t.shape),
            self._extract("posterior_log_variance_clipped", t, x_t.shape),
        )

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            self._extract("sqrt_recip_alphas_cumprod", t, x_t.shape) * x_t
            - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t.shape) * eps
        )

    def predict_eps_from_xstart(
        self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor
    ) -> torch.Tensor:
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t.shape) * x_t - pred_xstart) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t.shape
        )

    # ---- reverse process -------------------------------------------------------------------------------

    def p_mean_variance(
        self,
        model: Optional[ModelFn],
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
        model_kwargs: Optional[dict] = None,
        model_output: Optional[torch.Tensor] = None,
    ) -> dict:
        """p(x_{t-1} | x_t): dict(mean, variance, log_variance, pred_xstart, eps).

        ``model_output`` skips the model call (e.g. one forward with grad reused by sample and guidance);
        ``model`` may then be None. Gradients flow through every entry.
        """
        if model_output is None:
            if model is None:
                raise ValueError("give a model or a precomputed model_output")
            model_output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * channels:
                raise ValueError(f"learned-sigma model must output {2 * channels} channels")
            eps, var_values = torch.split(model_output, channels, dim=1)
            min_log = self._extract("posterior_log_variance_clipped", t, x.shape)
            max_log = self._extract("log_betas", t, x.shape)
            frac = (var_values + 1) / 2  # v in [-1, 1] interpolates between beta~_t and beta_t in log space
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            if model_output.shape[1] != channels:
                raise ValueError(f"model must output {channels} channels")
            eps = model_output
            variance = self._extract("fixed_large_variance", t, x.shape)
            log_variance = self._extract("log_fixed_large_variance", t, x.shape)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def ddpm_step(
        self,
        out: dict,
        x: torch.Tensor,
        t: torch.Tensor,
        gradient: Optional[torch.Tensor] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> dict:
        """One guided DDPM step from a p_mean_variance ``out``: mean + variance * gradient, plus noise
        except at t == 0. Returns dict(sample, pred_xstart, mean)."""
        mean = out["mean"]
        if gradient is not None:
            mean = mean.float() + out["variance"] * gradient.float()
        if noise is None:
            noise = torch.randn_like(x)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        sample = mean + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"], "mean": mean}

    def condition_score(self, out: dict, x: torch.Tensor, t: torch.Tensor, gradient: torch.Tensor) -> dict:
        """Shift the score by the guidance: eps <- eps - sqrt(1 - abar) * gradient (the DDIM guidance)."""
        alpha_bar = self._extract("alphas_cumprod", t, x.shape)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - torch.sqrt(1 - alpha_bar) * gradient
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {**out, "pred_xstart": pred_xstart, "mean": mean, "eps": eps}

    def ddim_step(
        self,
        out: dict,
        x: torch.Tensor,
        t: torch.Tensor,
        gradient: Optional[torch.Tensor] = None,
        eta: float = 0.0,
        noise: Optional[torch.Tensor] = None,
    ) -> dict:
        """One DDIM step (eta 0: deterministic) from a p_mean_variance ``out``, guidance via the score.
        Returns dict(sample, pred_xstart)."""
        if gradient is not None:
            out = self.condition_score(out, x, t, gradient)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = self._extract("alphas_cumprod", t, x.shape)
        alpha_bar_prev = self._extract("alphas_cumprod_prev", t, x.shape)
        sigma = (
            eta
            * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
            * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        )
        mean_pred = (
            out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        )
        sample = mean_pred
        if eta:
            if noise is None:
                noise = torch.randn_like(x)
            nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
            sample = mean_pred + nonzero * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def x0_guidance_scale(self, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """rho_t = (1 - abar_t) / abar_t: the x0 shift per unit of -dL/dx0 (issue 23).

        Tweedie: pred_x0 = (x_t + (1 - abar) score) / sqrt(abar); shifting the score by a guidance
        gradient g_xt moves pred_x0 by (1 - abar) / sqrt(abar) * g_xt, and with the UNet's Jacobian left
        out (the whole point: no backward through it) g_xt = g_x0 / sqrt(abar). This is the same scale the
        x_t-space DDIM guidance (``condition_score``) gives, so a lambda keeps its meaning.
        """
        return self._extract("sqrt_recipm1_alphas_cumprod", t, shape) ** 2

    def x0_guided_step(
        self,
        out: dict,
        x: torch.Tensor,
        t: torch.Tensor,
        gradient_x0: Optional[torch.Tensor],
        ddim: bool = False,
        noise: Optional[torch.Tensor] = None,
    ) -> dict:
        """One step guided in x0 space (MPGD; TFG's mu-term): x0' = pred_x0 + rho_t * gradient_x0
        (``gradient_x0`` = -dL/dx0), then the ordinary sampler step from x0' and x_t: DDPM's posterior mean
        q(x_{t-1} | x_t, x0') plus noise, or DDIM (eta 0) with the model's eps, i.e.
        x_{t-1} = sqrt(abar_{t-1}) x0' + sqrt(1 - abar_{t-1}) eps. Without a gradient: the plain step.
        Returns dict(sample, pred_xstart) with the corrected x0."""
        pred_xstart = out["pred_xstart"]
        if gradient_x0 is not None:
            pred_xstart = pred_xstart + self.x0_guidance_scale(t, x.shape) * gradient_x0.float()
        if ddim:
            eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])  # the model's eps, unguided
            alpha_bar_prev = self._extract("alphas_cumprod_prev", t, x.shape)
            sample = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev) * eps
            return {"sample": sample, "pred_xstart": pred_xstart}
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        if noise is None:
            noise = torch.randn_like(x)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        sample = mean + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": pred_xstart, "mean": mean}


# the reference's defaults for the diffusion part of the flags
DIFFUSION_FLAG_DEFAULTS: dict = {
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "learn_sigma": False,
    "timestep_respacing": "",
    "rescale_timesteps": False,
}


def _parse_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(value)


def diffusion_from_flags(flags: dict) -> GaussianDiffusion:
    """Build from the published flags (diffusion_steps, noise_schedule, learn_sigma, timestep_respacing,
    rescale_timesteps); other keys are ignored. Empty respacing keeps every step."""
    f = {**DIFFUSION_FLAG_DEFAULTS, **{k: v for k, v in flags.items() if k in DIFFUSION_FLAG_DEFAULTS}}
    for unsupported in ("use_kl", "predict_xstart", "sigma_small"):
        if _parse_bool(flags.get(unsupported, False)):
            raise ValueError(f"flag {unsupported}=True is not supported (no published ADM model uses it)")
    steps = int(f["diffusion_steps"])
    betas = get_named_beta_schedule(str(f["noise_schedule"]), steps)
    respacing = f["timestep_respacing"] or [steps]
    return GaussianDiffusion(
        betas,
        use_timesteps=space_timesteps(steps, respacing),
        learn_sigma=_parse_bool(f["learn_sigma"]),
        rescale_timesteps=_parse_bool(f["rescale_timesteps"]),
    )
