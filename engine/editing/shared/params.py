"""The parameters of an edit: field names and defaults are the reference implementation's CLI options.

Standard library only (no numpy, torch or PIL), so the CLI, the job runner and the preset check read them
without loading the models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional

from bridge.limits import DEFAULT_LIMITS, JobLimits, LimitError, check_edit_params
from engine.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUALITIES = ("paper", "balanced", "fast")  # defined in engine/editing/paper/modes.py
DETAIL_MODES = ("auto", "on", "off")  # engine/editing/paper/detail.py
GUIDANCE_GRADS = ("unet", "x0")  # paper/blended.py: the gradient through the UNet, or on x0 only
# latent/seam.py's levers after decoding, one or several joined by "+"; "auto": the latent default
SEAM_LEVERS = ("colour", "residual", "poisson", "band")
LATENT_SEAM_FIX = "band"
# Options of earlier versions that no quality mode set (issue 36): a request naming one is refused with why.
REMOVED_PARAMS = {
    "guidance_every": "guiding only every k-th step",
    "reuse_guidance": "reusing the last guided step's gradient",
    "prune_factor": "starting more candidates and pruning them",
    "prune_at": "starting more candidates and pruning them",
}


@dataclass
class EditParams:
    """Field names are the reference CLI's option names; defaults are the reference's."""

    prompt: str = ""
    skip_timesteps: int = 25
    timestep_respacing: str = "100"
    ddim: bool = False
    aug_num: int = 8
    clip_guidance_lambda: float = 1000
    range_lambda: float = 50
    lpips_sim_lambda: float = 1000
    l2_sim_lambda: float = 10000
    background_preservation_loss: bool = False
    invert_mask: bool = False
    enforce_background: bool = True
    local_clip_guided_diffusion: bool = False
    seed: int | None = 404
    batch_size: int = 4
    iterations_num: int = 8
    preview_every: int = 0  # 0: no preview images in progress callbacks
    # Speed (issues 8, 17): "auto" = bf16 on CUDA of compute capability >= 8, fp16 on older GPUs, fp32
    # elsewhere; "bf16"/"fp16" on any device; "fp32" is fp32 throughout. Weights are converted once a job.
    precision: str = "auto"
    compile: bool = False  # torch.compile the UNet (off: not measured to pay yet)
    # Quality modes (issue 16, engine/editing/paper/modes.py): the mode's name is recorded here; the levers it
    # sets are the fields themselves, resolved before the edit (modes.resolve_params).
    quality: str = "paper"
    # Full-resolution detail (issue 22, engine/editing/paper/detail.py): re-sample each candidate at the
    # document's resolution over fused model-size tiles; "auto" when it costs less than the first pass.
    detail: str = "off"
    detail_strength: float = 0.15  # fraction of the schedule the upscaled candidate is noised to
    # Issue 23: "unet" (the paper) differentiates the loss w.r.t. x_t through the UNet; "x0" w.r.t. the clean
    # estimate only (the UNet forward without gradient; MPGD's step), about 1.3 UNet forwards a step, not 3.
    guidance_grad: str = "unet"
    # Blended Latent Diffusion (issue 31, latent/blended_latent.py), for presets whose method is "latent":
    # timestep_respacing is the DDIM step count and skip_timesteps the steps skipped (50 and 12: the
    # authors' strength 0.75); the CLIP-guidance fields above do not apply there.
    guidance_scale: float | None = None  # classifier-free guidance; None: the preset's (7.5 SD, 5 SDXL)
    mask_shrink: bool = True  # progressive mask shrinking: dilated masks (7, 5, 3) first, as the paper
    background_reconstruction: bool = False  # fine-tune a decoder copy per candidate (75 Adam steps)
    # Issue 37 (latent presets): a soft selection's values as each latent cell's strength (Differential
    # Diffusion, latent/change_map.py; off: binarised as before; a hard selection is the same either way),
    # and the seam lever after decoding (latent/seam.py).
    differential: bool = True
    seam_fix: str = "auto"

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> EditParams:
        """From a JSON-like dict (the bridge); unknown keys are an InputError, not silently ignored."""
        known = {f.name for f in fields(cls)}
        for name in sorted(set(values) & set(REMOVED_PARAMS)):
            raise InputError(removed_param_message(name))
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown edit parameter(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def removed_param_message(name: str) -> str:
    """Why a removed option (REMOVED_PARAMS) is refused: one line naming it."""
    return f"edit parameter {name!r} was removed ({REMOVED_PARAMS[name]}; no quality mode used it)"


def validate_params(params: EditParams, limits: Optional[JobLimits] = None) -> None:
    """Reject impossible settings, and those over ``limits`` (bridge/limits.py; the built-in ones when
    None), before any work, with messages that name the option."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise InputError(message)

    need(isinstance(params.prompt, str), "prompt must be a string")
    need(int(params.skip_timesteps) >= 0, f"skip_timesteps must be >= 0, got {params.skip_timesteps}")
    need(int(params.aug_num) >= 1, f"aug_num must be >= 1, got {params.aug_num}")
    need(int(params.batch_size) >= 1, f"batch_size must be >= 1, got {params.batch_size}")
    need(int(params.iterations_num) >= 1, f"iterations_num must be >= 1, got {params.iterations_num}")
    need(int(params.preview_every) >= 0, f"preview_every must be >= 0, got {params.preview_every}")
    need(params.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
    need(params.quality in QUALITIES, f"quality must be one of {', '.join(QUALITIES)}: {params.quality!r}")
    need(
        params.guidance_grad in GUIDANCE_GRADS,
        f"guidance_grad must be one of {', '.join(GUIDANCE_GRADS)}, got {params.guidance_grad!r}",
    )
    need(params.detail in DETAIL_MODES, f"detail must be one of {', '.join(DETAIL_MODES)}: {params.detail!r}")
    fixes = str(params.seam_fix).split("+")
    levers_ok = set(fixes) <= set(SEAM_LEVERS) and len(set(fixes)) == len(fixes)
    need(
        params.seam_fix in ("auto", "off") or levers_ok,
        f"seam_fix must be auto, off or one or more of {', '.join(SEAM_LEVERS)} joined by '+', "
        f"got {params.seam_fix!r}",
    )
    strength = float(params.detail_strength)
    need(0.0 < strength <= 1.0, f"detail_strength must be above 0 and at most 1, got {strength}")
    if params.guidance_scale is not None:
        scale = float(params.guidance_scale)
        need(math.isfinite(scale) and scale >= 0, f"guidance_scale must be a number >= 0, got {scale}")
    for name in ("clip_guidance_lambda", "range_lambda", "lpips_sim_lambda", "l2_sim_lambda"):
        value = float(getattr(params, name))
        need(math.isfinite(value), f"{name} must be a finite number, got {value}")
    if params.seed is not None:
        need(0 <= int(params.seed) < 2**63 - 2**20, f"seed must be a non-negative integer, got {params.seed}")
    try:
        check_edit_params(params.to_dict(), limits or DEFAULT_LIMITS)
    except LimitError as exc:
        raise InputError(str(exc)) from None


def preset_edit_defaults(preset: Any) -> Dict[str, Any]:
    """A preset's recommended settings (``Preset.edit_defaults``), checked to name EditParams fields.

    The registry (engine.models) reads them as data; the check lives here, with the type it checks
    against, so that the model files do not depend on the editing job. A typo must not pass silently.
    """
    values: Mapping[str, Any] = preset.edit_defaults
    known = {f.name for f in fields(EditParams)} - {"prompt"}  # the prompt is always the user's
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"{preset.source}: 'edit_defaults' has unknown edit parameter(s) "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    return dict(values)
