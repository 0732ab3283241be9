"""Time the user can see (issue 16): the estimate before an edit and the remaining time during one.

The engine measures its step times per device and preset and reports, in its status and after each edit,
``estimates`` (seconds per candidate of each quality mode at the preset's settings, ranking and compositing
included) and ``step_times`` (seconds per candidate-step, guided and unguided, and the time outside the
steps: ``edit`` once per edit, ``run`` once per batch, ``candidate`` per candidate; an older engine sends
the steps only, and the estimate is then the steps alone). With full-resolution detail on or auto, the
stage's added time for the current selection: its tiles counted as the engine plans them (the tile
arithmetic is bridge/geometry.py's, shared) times the stored seconds per tile-step (``detail``).
Plain Python: tested outside Krita.
"""

import time
from typing import Any, Dict, Optional, Tuple

from bridge.geometry import context_box, tile_starts

from .params import split_candidates

QUALITIES = ("paper", "balanced", "fast")
DETAIL_MIN_SCALE = 1.25  # engine/editing/detail.py MIN_SCALE: below it the engine skips the stage
DETAIL_STRENGTH = 0.15  # the engine's default detail_strength (EditParams), for an engine that sends none
Bounds = Tuple[int, int, int, int]  # left, top, right, bottom (exclusive), document pixels


def detail_tiles(bounds: Bounds, width: int, height: int, model_size: int) -> int:
    """Tiles the engine's detail stage runs per step for a selection with these bounds in a width x height
    document: the region the plugin sends (bridge.geometry.context_box), the engine's box inside it (at
    least the model's size), 0 when that is within DETAIL_MIN_SCALE of the model's size, else the tiles of
    the box's grid that overlap the selection's bounds. The engine runs those that touch the mask: the
    same for a rectangle, at most this for any other shape."""
    left, top = max(0, int(bounds[0])), max(0, int(bounds[1]))
    right, bottom = min(int(width), int(bounds[2])), min(int(height), int(bounds[3]))
    if right <= left or bottom <= top:  # a selection outside the canvas: nothing to edit
        return 0
    rx, ry, rw, rh = context_box((left, top, right, bottom), width, height)
    inner = (left - rx, top - ry, right - rx, bottom - ry)
    bx, by, bw, bh = context_box(inner, rw, rh, min_size=model_size)
    if max(bw, bh) / model_size <= DETAIL_MIN_SCALE:
        return 0
    xs = [x for x in tile_starts(bw, model_size) if x < inner[2] - bx and x + model_size > inner[0] - bx]
    ys = [y for y in tile_starts(bh, model_size) if y < inner[3] - by and y + model_size > inner[1] - by]
    return len(xs) * len(ys)


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
        self.model_size: Optional[int] = None  # the model's side in pixels (status: models.image_size)
        self.detail_strength = DETAIL_STRENGTH
        self.schedules: Dict[str, int] = {}  # each mode's respaced steps at the preset's settings
        self.min_steps = 0  # the preset's floor of steps run at any strength (status: models.min_steps)

    def update(self, reply: Dict[str, Any], device: Optional[str] = None) -> None:
        """From a status reply or an edit job's result fields (either may lack the keys: older engine)."""
        estimates = reply.get("estimates")
        if isinstance(estimates, dict):
            self.per_candidate = {
                str(k): (float(v) if isinstance(v, (int, float)) else None) for k, v in estimates.items()
            }
        schedules = reply.get("schedules")
        if isinstance(schedules, dict):
            self.schedules = {str(k): int(v) for k, v in schedules.items() if isinstance(v, int) and v > 0}
        times = reply.get("step_times")
        if isinstance(times, dict):
            self.step_times = {str(k): float(v) for k, v in times.items() if isinstance(v, (int, float))}
        if device:
            self.device = device
        models = reply.get("models")
        if isinstance(models, dict):
            size = models.get("image_size")
            self.model_size = int(size) if isinstance(size, int) and size > 0 else self.model_size
            floor = models.get("min_steps")
            self.min_steps = floor if isinstance(floor, int) and floor > 0 else 0
            strength = (models.get("edit_defaults") or {}).get("detail_strength")
            if isinstance(strength, (int, float)) and 0 < strength <= 1:
                self.detail_strength = float(strength)

    def seconds(self, quality: str, candidates: int, guided_steps: Optional[int] = None) -> Optional[float]:
        """Seconds for ``candidates`` in ``quality``; None before the engine measured this device.

        ``guided_steps``: in ``paper`` mode the docker sends its own schedule, so the candidates' part is its
        guided step count (at least the preset's floor, ``min_steps``) times the measured guided step time
        when the engine reported one.
        """
        times = self.step_times
        if guided_steps is not None:  # a few-step preset runs its floor at any strength (engine: schedule)
            guided_steps = max(int(guided_steps), self.min_steps)
        if quality == "paper" and guided_steps is not None and "guided" in times:
            per: Optional[float] = times["guided"] * guided_steps + times.get("candidate", 0.0)
        else:
            per = self.per_candidate.get(quality)
        if per is None:
            return None
        runs = split_candidates(int(candidates))[1]  # the batches engine_params sends
        return per * candidates + times.get("edit", 0.0) + times.get("run", 0.0) * runs

    def detail_seconds(self, tiles: int, steps: int, candidates: int) -> Optional[float]:
        """Seconds the detail stage adds: its tile-steps (``steps``: the respaced schedule, of which it runs
        ``detail_strength``) at the stored rate, an unguided step's before it was measured (the engine's
        timing.detail_tile_seconds); None before any."""
        rate = self.step_times.get("detail") or self.step_times.get("unguided")
        if rate is None:
            return None
        detail_steps = max(1, min(int(steps), round(self.detail_strength * int(steps))))
        return rate * tiles * detail_steps * int(candidates)

    def text(
        self,
        quality: str,
        candidates: int,
        guided_steps: Optional[int] = None,
        detail: str = "off",
        selection: Optional[Tuple[Bounds, int, int]] = None,
        steps: int = 100,
        mode_schedule: bool = False,
    ) -> str:
        """The line the docker shows; with ``detail`` on or auto and ``selection`` (its bounds, the
        document's width and height) the detail stage's added time after it, counted on ``steps``, or with
        ``mode_schedule`` (the docker sends no schedule: params.mode_sets_schedule) on the schedule the
        engine's status gives for the mode."""
        seconds = self.seconds(quality, candidates, guided_steps)
        if seconds is None:
            if not self.per_candidate and not self.step_times:
                return "Time: the first edit on this device measures its speed"
            return "Time: not measured for this mode yet"
        if mode_schedule and quality in self.schedules:
            steps = self.schedules[quality]
        return f"Time: {describe_seconds(seconds)} on {where(self.device)}" + self._detail_text(
            seconds, candidates, detail, selection, steps
        )

    def _detail_text(
        self,
        first: float,
        candidates: int,
        detail: str,
        selection: Optional[Tuple[Bounds, int, int]],
        steps: int,
    ) -> str:
        if detail == "off" or selection is None or not self.model_size:
            return ""
        tiles = detail_tiles(*selection, self.model_size)
        if not tiles:
            return "; full-resolution detail: not needed for this selection"
        added = self.detail_seconds(tiles, steps, candidates)
        if added is None:
            return ""
        if detail == "auto" and added >= first:
            return (
                f"; auto: full-resolution detail would add {describe_seconds(added)}, more than the first "
                "pass: it will be skipped"
            )
        return f" + {describe_seconds(added)} for full-resolution detail"


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
