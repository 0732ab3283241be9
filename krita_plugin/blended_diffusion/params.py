"""The docker's options -> the engine's EditParams dict (field names of the reference CLI)."""

import random
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from bridge.limits import DEFAULT_LIMITS, LimitError, check_prompt

MAX_CANDIDATES = 16
MAX_BATCH = 4  # the reference's default batch size: larger batches only cost memory
QUALITIES = ("paper", "balanced", "fast")
DETAILS = ("off", "auto", "on")  # the engine's full-resolution detail pass (engine/editing/detail.py)


@dataclass
class EditOptions:
    """Everything a user chooses for one edit. ``strength`` 1.0 = start from pure noise (skip nothing)."""

    prompt: str = ""
    candidates: int = 4
    strength: float = 0.75
    steps: int = 100
    skip_timesteps: Optional[int] = None  # overrides strength when given
    aug_num: int = 8
    guidance_scale: float = 1000.0
    seed: Optional[int] = None  # None: a random seed, chosen here so the result can be reproduced
    scribble: bool = False
    background: bool = False  # background replacement: edit outside the selection
    baseline: bool = False  # Algorithm 1 (local CLIP-guided diffusion + background preservation loss)
    ddim: bool = False
    preview_every: int = 0
    quality: str = "paper"  # paper | balanced | fast: the engine's quality modes (engine/editing/modes.py)
    detail: str = "off"  # off | auto | on: re-sample the result at the document's resolution

    def validate(self) -> None:
        if not 1 <= int(self.candidates) <= MAX_CANDIDATES:
            raise ValueError(f"candidates must be between 1 and {MAX_CANDIDATES}, got {self.candidates}")
        if not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not 2 <= int(self.steps) <= 1000:
            raise ValueError(f"steps must be between 2 and 1000, got {self.steps}")
        if self.skip_timesteps is not None and not 0 <= int(self.skip_timesteps) < int(self.steps):
            raise ValueError(f"skip_timesteps must be in [0, {self.steps}), got {self.skip_timesteps}")
        if not 1 <= int(self.aug_num) <= 64:
            raise ValueError(f"augmentations must be between 1 and 64, got {self.aug_num}")
        if float(self.guidance_scale) < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        if self.seed is not None and not 0 <= int(self.seed) < 2**31:
            raise ValueError(f"seed must be in [0, 2^31), got {self.seed}")
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}")
        try:  # the engine's own limit (bridge/limits.py): megabytes of prompt are not sent
            check_prompt("prompt", self.prompt, DEFAULT_LIMITS)
        except LimitError as exc:
            raise ValueError(str(exc)) from None
        if self.detail not in DETAILS:
            raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {self.detail!r}")


def strength_to_skip(strength: float, steps: int) -> int:
    """How many of the ``steps`` diffusion steps to skip: strength 1 skips none (start from noise),
    strength 0.75 with 100 steps skips 25 (the reference default). At least one step always runs."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return min(max(int(round((1.0 - strength) * steps)), 0), steps - 1)


def skip_to_strength(skip: int, steps: int) -> float:
    return 1.0 - skip / float(steps)


def split_candidates(count: int) -> Tuple[int, int]:
    """(batch_size, iterations_num) whose product is exactly ``count``, batches as large as allowed."""
    if count < 1:
        raise ValueError(f"candidates must be >= 1, got {count}")
    batch = max(d for d in range(1, min(count, MAX_BATCH) + 1) if count % d == 0)
    return batch, count // batch


def engine_params(options: EditOptions, rng: Optional[random.Random] = None) -> Dict[str, Any]:
    """The EditParams dict sent over the bridge. The mask is inverted by the plugin for background
    replacement (so ``invert_mask`` stays False and the sent mask is always the edited area)."""
    options.validate()
    batch, iterations = split_candidates(int(options.candidates))
    skip = (
        int(options.skip_timesteps)
        if options.skip_timesteps is not None
        else strength_to_skip(float(options.strength), int(options.steps))
    )
    seed = options.seed if options.seed is not None else (rng or random.SystemRandom()).randrange(2**31)
    params: Dict[str, Any] = {
        "prompt": options.prompt.strip(),
        "skip_timesteps": skip,
        "timestep_respacing": str(int(options.steps)),
        "ddim": bool(options.ddim),
        "aug_num": int(options.aug_num),
        "clip_guidance_lambda": float(options.guidance_scale),
        "invert_mask": False,
        "enforce_background": True,
        "background_preservation_loss": bool(options.baseline),
        "local_clip_guided_diffusion": bool(options.baseline),
        "seed": int(seed),
        "batch_size": batch,
        "iterations_num": iterations,
        "preview_every": int(options.preview_every),
    }
    if options.detail != "off":  # sent only when asked for: an older engine refuses a parameter it lacks
        params["detail"] = options.detail
    if options.quality != "paper":
        # The mode picks the schedule and the augmentations from the engine's preset: leave out the levers
        # still at their defaults (an option sent is an explicit one and would override the mode).
        params["quality"] = options.quality
        defaults = EditOptions()
        if mode_sets_schedule(options):
            del params["skip_timesteps"], params["timestep_respacing"]
        if options.aug_num == defaults.aug_num:
            del params["aug_num"]
        if not options.ddim:
            del params["ddim"]
    return params


def mode_sets_schedule(options: EditOptions) -> bool:
    """Whether the engine's quality mode picks the schedule: a mode other than paper with the steps and the
    strength left at their defaults (engine_params then sends neither)."""
    defaults = EditOptions()
    return (
        options.quality != "paper"
        and options.skip_timesteps is None
        and (options.steps, options.strength) == (defaults.steps, defaults.strength)
    )


def guided_steps(options: EditOptions) -> int:
    """Guided steps per candidate of the schedule ``options`` send in paper mode (for the time estimate)."""
    steps = int(options.steps)
    skip = (
        int(options.skip_timesteps)
        if options.skip_timesteps is not None
        else strength_to_skip(float(options.strength), steps)
    )
    return steps - skip
