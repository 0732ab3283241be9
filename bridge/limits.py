"""The limits on what one job may ask for: one table, read by the engine (which enforces it) and by the
plugin (which shows it and checks a request before sending it). Standard library only.

Every parameter that scales a job's memory or time has a limit here; docs/limits.md is the table. The
engine checks a request against them before anything is planned or allocated and refuses what is over with
``invalid_input`` and one line naming the parameter and its limit (:class:`LimitError`). ``engine serve``
may lower them for a shared engine (``--max-candidates``, ``--max-megapixels``, ``--max-job-seconds``) and
reports them in its status reply (:meth:`JobLimits.to_status`), so the plugin shows them before the user
presses a button.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

# The one pixel limit: an attachment, a decoded image, an extension's canvas. 268 Mpx: a 100 Mpx photograph
# is a normal document; the protocol's byte limits (bridge/protocol.py) are sized for this many RGBA pixels.
MAX_IMAGE_PIXELS = 16384 * 16384
CLIP_CONTEXT = 77  # tokens CLIP's text encoder reads, start and end tokens included
SIDES = ("left", "right", "top", "bottom")
_RESPACING = re.compile(r"^\s*(?:ddim)?(\d+)\s*$")


class LimitError(ValueError):
    """A request over a limit: ``param`` names what to change, ``limit`` is the value it may not exceed."""

    def __init__(self, param: str, limit: Any, message: str) -> None:
        super().__init__(message)
        self.param, self.limit = param, limit


@dataclass(frozen=True)
class JobLimits:
    """The built-in values are the ceilings: ``engine serve`` may only lower them. Each lets through every
    job the plugin's docker can make (16 candidates, 1000 steps, 64 augmentations, 16384 px per side)."""

    max_candidates: int = 64  # batch_size x iterations_num: candidates one job returns
    max_batch_size: int = 16  # candidates run at once (memory grows with it)
    max_aug_num: int = 128  # augmented views CLIP sees per candidate and step
    max_steps: int = 1000  # length of the respaced schedule (the model's own 1000 steps)
    max_respacing_chars: int = 200  # the timestep_respacing string
    max_prompt_chars: int = 1000  # refused before tokenizing; CLIP itself reads CLIP_CONTEXT - 2 tokens
    max_extend_side: int = 16384  # pixels one side may grow by
    max_image_pixels: int = MAX_IMAGE_PIXELS  # an image sent, and the canvas an extension makes
    max_windows: int = 16384  # diffusion windows of one extension (a whole canvas of new pixels at 256 px)
    max_window: int = 4096  # the extension's window side in canvas pixels
    max_blend_band: int = 1024  # pixels of the original an extension's transition may reach into
    max_regions: int = 8  # selections with their own prompts in one edit (each adds CLIP work per step)
    max_jobs_per_connection: int = 4  # queued and running jobs one client may hold
    max_job_seconds: Optional[float] = None  # refuse jobs estimated to take longer (None: no cap)

    def lowered(self, **values: Any) -> JobLimits:
        """These limits with some lowered (``None`` values are left as they are); a value above the
        built-in ceiling or below 1 is a ValueError naming the setting."""
        changes: Dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            ceiling = getattr(JobLimits(), name)
            if value <= 0 or (ceiling is not None and value > ceiling):
                bound = f"between 1 and {ceiling}" if ceiling is not None else "positive"
                raise ValueError(f"{name} must be {bound}, not {value}")
            changes[name] = value
        return dataclasses.replace(self, **changes)

    def to_status(self) -> Dict[str, Any]:
        """The limits as the engine's status reply carries them (``limits``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_status(cls, values: Optional[Mapping[str, Any]]) -> JobLimits:
        """The limits a status reply reported; the built-in ones for what it left out (an older engine)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in known})


DEFAULT_LIMITS = JobLimits()


def _over(param: str, value: Any, limit: Any, what: str = "") -> LimitError:
    extra = f" ({what})" if what else ""
    return LimitError(param, limit, f"{param} {value} is over the limit of {limit}{extra}")


def respaced_steps(respacing: str, diffusion_steps: int = 1000) -> int:
    """Steps of a timestep_respacing ("100", "ddim50", "10,20,30"; "" = all); ValueError if unreadable."""
    spec = str(respacing).strip()
    if not spec:
        return diffusion_steps
    match = _RESPACING.match(spec)
    if match is not None:
        return int(match.group(1))
    return sum(int(part) for part in spec.split(","))


def check_edit_params(values: Mapping[str, Any], limits: JobLimits = DEFAULT_LIMITS) -> None:
    """Refuse edit parameters over ``limits`` (LimitError). Values are EditParams fields already checked
    for type and sign; those not given are not checked."""

    def number(name: str, default: int = 1) -> int:
        return int(values.get(name, default))

    batch, iterations = number("batch_size"), number("iterations_num")
    if batch > limits.max_batch_size:
        raise _over("batch_size", batch, limits.max_batch_size, "candidates run at once")
    if iterations > limits.max_candidates or batch * iterations > limits.max_candidates:
        raise LimitError(
            "iterations_num",
            limits.max_candidates,
            f"batch_size x iterations_num = {batch * iterations} candidates is over the limit of "
            f"{limits.max_candidates} candidates per job",
        )
    if number("aug_num") > limits.max_aug_num:
        raise _over("aug_num", number("aug_num"), limits.max_aug_num, "augmented views per step")
    respacing = str(values.get("timestep_respacing", ""))
    if len(respacing) > limits.max_respacing_chars:
        raise LimitError(
            "timestep_respacing",
            limits.max_respacing_chars,
            f"timestep_respacing of {len(respacing)} characters is over the limit of "
            f"{limits.max_respacing_chars}",
        )
    try:
        steps = respaced_steps(respacing)
    except ValueError:
        return  # not a schedule at all: the diffusion's own check says so
    if steps > limits.max_steps:
        raise _over("timestep_respacing", f"{respacing!r} ({steps} steps)", limits.max_steps, "steps")
    check_prompt("prompt", values.get("prompt", ""), limits)


def check_prompt(param: str, prompt: Any, limits: JobLimits = DEFAULT_LIMITS) -> None:
    """Refuse megabytes of prompt before anything tokenizes them (the token count is the engine's check)."""
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_chars:
        raise LimitError(
            param,
            limits.max_prompt_chars,
            f"the {param} has {len(prompt)} characters, over the limit of {limits.max_prompt_chars} "
            f"(CLIP reads at most {CLIP_CONTEXT - 2} tokens of it)",
        )


def check_region_count(count: int, limits: JobLimits = DEFAULT_LIMITS) -> None:
    """Refuse an edit of more regions (selections with their own prompts, issue 39) than ``limits`` allow."""
    if count > limits.max_regions:
        raise LimitError(
            "regions",
            limits.max_regions,
            f"{count} regions is over the limit of {limits.max_regions} regions per job",
        )


def check_extension(
    sides: Mapping[str, int],
    image_size: Optional[Tuple[int, int]] = None,
    limits: JobLimits = DEFAULT_LIMITS,
    blend_band: int = 0,
    window: int = 0,
) -> None:
    """Refuse an extension over ``limits``: a side, the blend band, the window, and (with ``image_size``)
    the canvas it makes. The number of windows is the engine's check (it knows the model's size)."""
    for side in SIDES:
        amount = int(sides.get(side, 0) or 0)
        if amount > limits.max_extend_side:
            raise _over(side, f"{amount} px", f"{limits.max_extend_side} px", "pixels one side may grow by")
    if int(blend_band) > limits.max_blend_band:
        raise _over("blend_band", f"{blend_band} px", f"{limits.max_blend_band} px")
    if int(window) > limits.max_window:
        raise _over("window", f"{window} px", f"{limits.max_window} px")
    if image_size is not None:
        width = int(image_size[0]) + int(sides.get("left", 0) or 0) + int(sides.get("right", 0) or 0)
        height = int(image_size[1]) + int(sides.get("top", 0) or 0) + int(sides.get("bottom", 0) or 0)
        check_pixels("canvas", width, height, limits)


def check_pixels(param: str, width: int, height: int, limits: JobLimits = DEFAULT_LIMITS) -> None:
    if width * height > limits.max_image_pixels:
        raise LimitError(
            param,
            limits.max_image_pixels,
            f"the {param} of {width}x{height} = {width * height / 1e6:.1f} Mpx is over the limit of "
            f"{limits.max_image_pixels / 1e6:.1f} Mpx",
        )


__all__ = [
    "CLIP_CONTEXT",
    "DEFAULT_LIMITS",
    "MAX_IMAGE_PIXELS",
    "JobLimits",
    "LimitError",
    "check_edit_params",
    "check_extension",
    "check_pixels",
    "check_prompt",
    "check_region_count",
    "respaced_steps",
]
