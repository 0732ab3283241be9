"""Quality modes (issue 16): ``paper``, ``balanced``, ``fast`` as data, and how they resolve into EditParams.

A mode scales the *base* settings (the reference defaults, replaced by a preset's ``edit_defaults`` where it
recommends some, e.g. the toy preset's short schedule): ``paper`` is the base unchanged, the others shorten
the respaced schedule at the same strength (skip_timesteps scales with it), take the guidance gradient on the
clean estimate (no backward through the UNet) and lower the CLIP lambda with it. Every option given
explicitly (command line, bridge request) wins over what the mode sets.

Why these values: docs/performance.md, "Quality modes", measured by bench/quality_modes.py.

Standard library only: the CLI, the job runner and the plugin-facing status read it without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Collection, Dict, Mapping, Optional

from engine.editing.shared.params import QUALITIES, EditParams
from engine.errors import InputError

MIN_STEPS = 4  # below this the respaced DDPM schedule stops making images at all

# Cost model in UNet-forward equivalents (issue 16): a forward with the backward w.r.t. its input costs
# about 3 forwards; CLIP ViT-B/16 forward + backward is 0.0716 TFLOP per view against the ADM-256 UNet
# forward's 2.24 TFLOP (bench/model_bench.py FLOP counts), a CLIP forward alone a third of that.
UNET_GUIDED = 3.0
UNET_GUIDED_X0 = 1.0  # issue 23: guidance on x0 runs the UNet forward without gradient, CLIP's backward only
CLIP_VIEW_GUIDED = 0.573 / 8 / 2.240
CLIP_VIEW_FORWARD = 0.0351 / 2.240


@dataclass(frozen=True)
class Mode:
    """How a mode changes the base settings (each a factor or a value; 1 everywhere = the base)."""

    name: str
    step_fraction: float  # respaced steps relative to the base schedule, same strength
    aug_fraction: float  # augmentations relative to the base
    guidance_grad: str = "unet"  # "x0": the gradient w.r.t. the clean estimate only (issue 23)
    lambda_factor: float = 1.0  # clip_guidance_lambda relative to the base
    summary: str = ""


MODES: Dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("paper", 1.0, 1.0, summary="the paper's settings (or the preset's recommended ones)"),
        Mode(
            "balanced",
            0.8,
            1.0,
            guidance_grad="x0",
            lambda_factor=0.6,
            summary="four fifths of the steps, CLIP guidance on the clean estimate (no backward through the "
            "UNet) at 0.6 of the lambda",
        ),
        Mode(
            "fast",
            0.3,
            1.0,
            guidance_grad="x0",
            lambda_factor=0.25,
            summary="three tenths of the steps, guidance on the clean estimate at a quarter of the lambda",
        ),
    )
}
assert tuple(MODES) == QUALITIES, "params.QUALITIES must name the modes defined here"

_RESPACING = re.compile(r"^\s*(ddim)?(\d+)\s*$")


def _field_defaults() -> Dict[str, Any]:
    return {f.name: f.default for f in fields(EditParams)}


def scale_schedule(respacing: str, skip: int, fraction: float) -> tuple[str, int]:
    """(respacing, skip) with ``fraction`` of the steps, starting at the same noise level.

    "ddimN" becomes a plain count (an exact DDIM stride rarely exists for the new count; ``ddim`` stays as
    set); a sectioned schedule ("10,20,30") is kept as it is.
    """
    match = _RESPACING.match(str(respacing))
    if match is None or fraction == 1.0:
        return str(respacing), int(skip)
    total = int(match.group(2))
    steps = max(MIN_STEPS, int(round(total * fraction)))
    if steps >= total:
        return str(respacing), int(skip)
    new_skip = min(int(round(int(skip) * steps / total)), steps - 1)
    return str(steps), new_skip


def resolve_params(
    quality: str,
    explicit: Mapping[str, Any],
    preset_defaults: Optional[Mapping[str, Any]] = None,
) -> EditParams:
    """EditParams for ``quality``: base = reference defaults <- preset_defaults <- explicit, then the mode's
    changes to every lever not in ``explicit``. ``paper`` returns the base itself (today's behaviour)."""
    explicit = {k: v for k, v in explicit.items() if k != "quality"}
    base = EditParams(**{**_field_defaults(), **dict(preset_defaults or {}), **explicit})
    return apply_mode(base, quality, explicit)


def apply_mode(base: EditParams, quality: str, explicit: Collection[str] = ()) -> EditParams:
    """``base`` (defaults, preset and explicit options already merged) with ``quality``'s changes to the
    levers not named in ``explicit``; the result records the mode in ``quality``."""
    if quality not in MODES:
        raise InputError(f"quality must be one of {', '.join(MODES)}, got {quality!r}")
    mode = MODES[quality]
    values = {**base.to_dict(), "quality": quality}
    if quality != "paper":
        respacing, skip = scale_schedule(
            values["timestep_respacing"], values["skip_timesteps"], mode.step_fraction
        )
        if "timestep_respacing" not in explicit:
            values["timestep_respacing"] = respacing
            if "skip_timesteps" not in explicit:
                values["skip_timesteps"] = skip
        changes = {
            "aug_num": max(1, int(round(int(values["aug_num"]) * mode.aug_fraction))),
            "guidance_grad": mode.guidance_grad,
            "clip_guidance_lambda": float(values["clip_guidance_lambda"]) * mode.lambda_factor,
        }
        values.update({k: v for k, v in changes.items() if k not in explicit})
    return EditParams(**values)


@dataclass(frozen=True)
class StepPlan:
    """The steps of one candidate: how many compute the guidance gradient (all, with a prompt)."""

    steps: int
    guided_steps: int
    unguided_steps: int

    def candidate_steps(self, guided: bool) -> int:
        """Guided (or unguided) steps one candidate runs."""
        return self.guided_steps if guided else self.unguided_steps


def step_plan(params: EditParams, num_timesteps: int, guided: bool = True) -> StepPlan:
    """The step plan of ``params`` for a schedule of ``num_timesteps`` respaced steps."""
    steps = num_timesteps - int(params.skip_timesteps)
    return StepPlan(steps, steps if guided else 0, 0 if guided else steps)


def unet_equivalents(params: EditParams, num_timesteps: int, guided: bool = True) -> float:
    """Cost of one candidate in UNet-forward equivalents."""
    p = step_plan(params, num_timesteps, guided)
    unet = UNET_GUIDED_X0 if getattr(params, "guidance_grad", "unet") == "x0" else UNET_GUIDED
    per_guided = unet + CLIP_VIEW_GUIDED * int(params.aug_num)
    return p.candidate_steps(True) * per_guided + p.candidate_steps(False) * 1.0
