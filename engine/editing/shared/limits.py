"""The engine's side of the job limits (bridge/limits.py holds the table): the checks that need the engine's
knowledge, done before anything is planned or allocated.

- an edit's parameters: bridge.limits.check_edit_params, through params.validate_params;
- a prompt's length in CLIP tokens (say so rather than let CLIP cut it silently);
- an extension: its sides and canvas (bridge.limits.check_extension), then its number of windows, counted
  here with arithmetic alone (the window plan itself is only built for a job that passed).

Standard library only (the tokenizer is imported when a prompt is counted).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Tuple

from bridge.limits import (
    CLIP_CONTEXT,
    DEFAULT_LIMITS,
    SIDES,
    JobLimits,
    LimitError,
    check_extension,
    check_prompt,
)
from engine.errors import InputError


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int) -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def check_prompt_tokens(
    prompt: str, param: str = "prompt", context_length: int = CLIP_CONTEXT, limits: JobLimits = DEFAULT_LIMITS
) -> None:
    """InputError when CLIP would not read the whole prompt (its start and end tokens take two places)."""
    try:
        check_prompt(param, prompt, limits)  # megabytes are refused before the tokenizer sees them
    except LimitError as exc:
        raise InputError(str(exc)) from None
    text = str(prompt).strip()
    room = int(context_length) - 2
    if len(text.encode("utf-8")) <= room:
        return  # byte-level BPE: never more tokens than bytes (and no tokenizer to load)
    tokens = len(_tokenizer(int(context_length)).encode(text))
    if tokens > room:
        raise InputError(
            f"the {param} is {tokens} tokens long and CLIP reads only {room}: shorten it (CLIP would "
            "silently ignore the rest)"
        )


def _outward_count(known: int, amount: int, size: int) -> int:
    """len(extend._outward(...)): windows walking ``amount`` px out of ``known`` known px, ``size`` wide."""
    half = (size + 1) // 2
    count, done = 0, 0
    while done < amount and known + done < half:  # the first windows: less than half of them known
        done += min(amount - done, size - (known + done))
        count += 1
    step = max(1, size - half)  # then every window is half known
    return count + (-(-(amount - done) // step) if done < amount else 0)


def _across_count(span: int, size: int) -> int:
    """len(extend._across(...)): windows of at most ``size`` over ``span`` px, overlapping by a quarter."""
    length = min(size, span)
    stride = max(1, length - length // 4)
    return 1 + -(-max(0, span - length) // stride)


def count_windows(image_size: Tuple[int, int], sides: Mapping[str, int], window: int) -> int:
    """The number of windows extend.plan_windows makes, without making them (passes in extend's order)."""
    width, height = (int(v) for v in image_size)
    total = 0
    for side in SIDES:
        amount = int(sides.get(side, 0) or 0)
        if amount <= 0:
            continue
        if side in ("left", "right"):
            total += _outward_count(width, amount, window) * _across_count(height, window)
            width += amount
        else:
            total += _outward_count(height, amount, window) * _across_count(width, window)
            height += amount
    return total


def check_extend(
    image_size: Tuple[int, int],
    sides: Mapping[str, int],
    model_size: int,
    limits: Optional[JobLimits] = None,
    blend_band: int = 0,
    window: int = 0,
) -> int:
    """InputError for an extension over the limits (sides, blend band, window, canvas, windows); else the
    number of windows it will run."""
    limits = limits or DEFAULT_LIMITS
    try:
        check_extension(sides, image_size, limits, blend_band, window)
    except LimitError as exc:
        raise InputError(str(exc)) from None
    windows = count_windows(image_size, sides, int(window) or int(model_size))
    if windows > limits.max_windows:
        raise InputError(
            f"the extension would run {windows} diffusion windows, over the limit of {limits.max_windows} "
            "windows (extend less, or in several steps)"
        )
    return windows


__all__ = ["check_extend", "check_prompt_tokens", "count_windows"]
