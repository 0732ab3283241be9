"""Regions (issue 39) in an ``edit`` request: the mask attachments ``region0``..``regionN-1`` and the
``region_prompts`` param (one prompt per attachment, in the same order), checked before the job is queued.

The request carries either a ``mask`` attachment or regions: the regions' union is the edited area and the
job's ``prompt`` is the background prompt (engine/editing/shared/regions.py). Standard library only: the
checks run before anything heavy is imported, and the masks are decoded only when the job runs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bridge import errors
from bridge.limits import DEFAULT_LIMITS, JobLimits, LimitError, check_region_count

PREFIX = "region"  # the attachments' names: region0, region1, ...
PROMPTS = "region_prompts"  # the param: not an EditParams field, so it is taken out before those checks


def region_name(index: int) -> str:
    return f"{PREFIX}{index}"


def _invalid(message: str) -> errors.JobFailed:
    return errors.JobFailed(errors.INVALID_INPUT, message)


def _attachment_numbers(images: Mapping[str, bytes]) -> List[int]:
    """The numbers of the region attachments present (the server let through only region<digits>)."""
    numbers = []
    for name in images:
        digits = name[len(PREFIX) :]
        if name.startswith(PREFIX) and digits.isdigit():
            numbers.append(int(digits))
    return sorted(numbers)


def split_request(
    params: Mapping[str, Any], images: Mapping[str, bytes], limits: JobLimits = DEFAULT_LIMITS
) -> Tuple[Dict[str, Any], Optional[List[str]]]:
    """(the edit params without ``region_prompts``, the region prompts or None for a mask edit), or
    JobFailed(invalid_input) saying what is wrong. A request without an ``image`` (a runner asked
    directly, as the unit tests do) is not held to having a mask or regions; the server always has one."""
    rest = dict(params)
    prompts = rest.pop(PROMPTS, None)
    if prompts is not None:
        if not isinstance(prompts, list):
            raise _invalid(f"{PROMPTS} must be a list of strings, one per region, not {prompts!r:.80}")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise _invalid(
                    f"{PROMPTS} must be a list of strings: region {index + 1}'s prompt is {prompt!r:.80}"
                )
    numbers = _attachment_numbers(images)
    if numbers != list(range(len(numbers))):
        names = ", ".join(region_name(n) for n in numbers)
        raise _invalid(f"region attachments must be named region0, region1, ... without gaps, got {names}")
    try:  # the larger count: a request over the limit is told the limit, whichever side it overfills
        check_region_count(max(len(numbers), len(prompts or ())), limits)
    except LimitError as exc:
        raise _invalid(str(exc)) from None
    if len(prompts or ()) != len(numbers):
        raise _invalid(
            f"{PROMPTS} has {len(prompts or ())} prompt(s) but the request carries {len(numbers)} region "
            "attachment(s): one prompt per region, in the order region0, region1, ..."
        )
    regions = bool(numbers)
    if regions and "mask" in images:
        raise _invalid("give an edit either a mask or regions, not both: the regions' union is the mask")
    if not regions and "mask" not in images and "image" in images:
        raise _invalid(f"an edit needs a mask attachment, or regions ({PREFIX}0, ... with {PROMPTS})")
    return rest, (list(prompts) if regions else None)


def check_job(checked: Mapping[str, Any], prompts: Sequence[str], check: Callable[[str, str], None]) -> None:
    """A regions job's checked params (no invert_mask: editor.edit refuses it too, but only once the job
    runs) and each region's prompt through ``check(prompt, what)`` (the runner's CLIP token check), a
    failure as JobFailed(invalid_input) naming the region."""
    if checked.get("invert_mask"):
        raise _invalid("invert_mask does not apply to regions: each region's mask says what it edits")
    for index, prompt in enumerate(prompts):
        try:
            check(prompt, f"prompt of region {index + 1}")
        except errors.JobFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the check's InputError or LimitError, said as it is
            raise _invalid(str(exc)) from None


def estimate_prompt(prompts: Sequence[str]) -> str:
    """The prompt admission estimates a regions job with: it only asks whether the job is guided. One
    region is a plain edit with that region's prompt; several are guided if any region's prompt is set."""
    if len(prompts) == 1:
        return prompts[0]
    return next((prompt for prompt in prompts if prompt.strip()), "")


def time_factor(method: str, prompts: Sequence[str]) -> int:
    """How many single edits' time admission counts a regions job as: the paper method runs one CLIP loss
    and one backward pass through the UNet per guided region (toy world: 1.84x one edit for two regions,
    docs/regions.md), so as many as those; the latent method's one pass a step costs about one edit
    (Stable Diffusion 1.5's step: 1.05x with two regions)."""
    guided = sum(1 for prompt in prompts if prompt.strip())
    return max(1, guided) if method == "paper" and len(prompts) > 1 else 1


def detail_mask_name(images: Mapping[str, bytes]) -> Optional[str]:
    """The attachment the detail stage's work is counted on: the mask, or the one region of a single
    region job (a plain edit); None for several regions, which are never detailed (regions.without_detail)."""
    if "mask" in images:
        return "mask"
    return region_name(0) if region_name(1) not in images and region_name(0) in images else None


def admitted(checked: Mapping[str, Any], estimated: Mapping[str, Any]) -> Dict[str, Any]:
    """The params to run with: what admission returned for ``estimated`` (its batch split), with the
    request's own prompt back in place of the stand-in it was estimated with."""
    return {**estimated, "prompt": checked.get("prompt", "")}


__all__ = [
    "PREFIX",
    "PROMPTS",
    "admitted",
    "check_job",
    "detail_mask_name",
    "estimate_prompt",
    "time_factor",
    "region_name",
    "split_request",
]
