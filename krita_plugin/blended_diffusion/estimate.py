"""Time the user can see (issue 16): the estimate before an edit and the remaining time during one.

The engine measures its step times per device and preset and reports, in its status and after each edit,
``estimates`` (seconds per candidate of each quality mode at the preset's settings, ranking and compositing
included) and ``step_times`` (seconds per candidate-step, guided and unguided, and the time outside the
steps: ``edit`` once per edit, ``run`` once per batch, ``candidate`` per candidate; an older engine sends
the steps only, and the estimate is then the steps alone). Plain Python: tested outside Krita.
"""

import time
from typing import Any, Dict, Optional

from .params import split_candidates

QUALITIES = ("paper", "balanced", "fast")


def describe_seconds(seconds: float) -> str:
    """'about 40 s', 'about 6 min', 'about 2.5 h' (the engine's wording)."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def where(device: Optional[str]) -> str:
    if not device:
        return "this device"
    return "this CPU" if device == "cpu" else device


class Estimates:
    """What the engine last said about its speed; the numbers the docker shows before an edit."""

    def __init__(self) -> None:
        self.per_candidate: Dict[str, Optional[float]] = {}
        self.step_times: Dict[str, float] = {}
        self.device: Optional[str] = None

    def update(self, reply: Dict[str, Any], device: Optional[str] = None) -> None:
        """From a status reply or an edit job's result fields (either may lack the keys: older engine)."""
        estimates = reply.get("estimates")
        if isinstance(estimates, dict):
            self.per_candidate = {
                str(k): (float(v) if isinstance(v, (int, float)) else None) for k, v in estimates.items()
            }
        times = reply.get("step_times")
        if isinstance(times, dict):
            self.step_times = {str(k): float(v) for k, v in times.items() if isinstance(v, (int, float))}
        if device:
            self.device = device

    def seconds(self, quality: str, candidates: int, guided_steps: Optional[int] = None) -> Optional[float]:
        """Seconds for ``candidates`` in ``quality``; None before the engine measured this device.

        ``guided_steps``: in ``paper`` mode the docker sends its own schedule, so the candidates' part is its
        guided step count times the measured guided step time when the engine reported one.
        """
        times = self.step_times
        if quality == "paper" and guided_steps is not None and "guided" in times:
            per: Optional[float] = times["guided"] * guided_steps + times.get("candidate", 0.0)
        else:
            per = self.per_candidate.get(quality)
        if per is None:
            return None
        runs = split_candidates(int(candidates))[1]  # the batches engine_params sends
        return per * candidates + times.get("edit", 0.0) + times.get("run", 0.0) * runs

    def text(self, quality: str, candidates: int, guided_steps: Optional[int] = None) -> str:
        seconds = self.seconds(quality, candidates, guided_steps)
        if seconds is None:
            if not self.per_candidate and not self.step_times:
                return "Time: the first edit on this device measures its speed"
            return "Time: not measured for this mode yet"
        return f"Time: {describe_seconds(seconds)} on {where(self.device)}"


class Remaining:
    """Remaining time during an edit, from the rate of the steps so far (like tqdm's ETA)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.start: Optional[float] = None
        self.first_step = 0

    def reset(self) -> None:
        self.start = None

    def text(self, step: int, total: int) -> str:
        now = self.clock()
        if self.start is None:
            self.start, self.first_step = now, step
            return ""
        done = step - self.first_step
        if done <= 0 or total <= step:
            return ""
        left = (now - self.start) / done * (total - step)
        return f"{describe_seconds(left)} left"
