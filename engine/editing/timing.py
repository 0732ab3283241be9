"""Step times measured on this device, stored per device and preset, and the time estimates made from them.

Each edit records how long its steps took per candidate (three kinds apart: an unguided step is one UNet
forward, a guided one a forward, a backward and CLIP, a ``guided_x0`` one (issue 23) a forward without
gradient and CLIP's forward and backward), and the time it spent outside the
step rate, in three parts (FIXED): ``edit``, once per edit before the first run (input preparation, the
prompt's text encoding, loading LPIPS); ``run``, per run (batch of candidates): what the run's steps took
beyond their medians (the first step's warm-up, the pruning's ranking); ``candidate``, per kept candidate
after the steps (ranking, compositing, and the caller's PNG encoding when it saves after it). A short toy
edit spends about half its time there: an estimate from the steps alone was 41-51 % short
(docs/perf-quality-modes.md). The latest values are kept in ``step_times.json`` in the per-user data folder,
keyed by device and preset, so the next edit's estimate ("about 6 min on this CPU") comes from this
machine's own speed. A file written before the fixed parts were recorded still gives an estimate (from the
steps alone). Before the first edit there is nothing to estimate from: the estimate is None and the first
edit measures.

Standard library only; torch is asked for the device's name only when a caller passes a device.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bridge.limits import respaced_steps
from engine.editing.paper.modes import MODES, resolve_params, step_plan
from engine.editing.shared.params import EditParams

FILE_NAME = "step_times.json"
PATH_ENV = "BLENDED_DIFFUSION_STEP_TIMES"  # another file than the per-user one (tests, benches)
KINDS = ("guided", "unguided", "guided_x0")
DETAIL = "detail"  # seconds per tile-step of the detail stage (engine/editing/paper/detail.py): one forward
FIXED = ("edit", "run", "candidate")  # seconds per edit, per run, per kept candidate outside the step rate
# The unguided step costs about a third of a guided one (one forward against forward + backward + CLIP):
# the estimate's stand-in until an unguided step was measured.
UNGUIDED_SHARE = 1 / 3.4
# A step guided on x0 (forward without gradient + CLIP forward and backward, 8 views) against a guided one:
# (1 + 0.256) / (3 + 0.256) UNet-forward equivalents at full size (modes.py's cost model); the stand-in
# until one was measured.
X0_SHARE = 0.386


def default_store_path() -> Path:
    """``$BLENDED_DIFFUSION_STEP_TIMES``, else step_times.json in the per-user data folder."""
    from engine.models.registry import user_data_dir

    env = os.environ.get(PATH_ENV)
    return Path(env).expanduser() if env else user_data_dir() / FILE_NAME


def device_key(device: Any) -> str:
    """A device's name for the store: the GPU's model, or the CPU's model and torch's thread count."""
    name = str(device)
    if name.startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name(torch.device(name))}"
    if name == "cpu":
        import torch

        return f"cpu:{_cpu_model()}:{torch.get_num_threads()}t"
    return name


def store_key(device: Any, preset: str) -> str:
    """The store's key of an edit's times: the device's name and the preset's."""
    return f"{device_key(device)}|{preset}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class StepTimes:
    """The stored seconds, {key: {"guided": s, "unguided": s, "edit": s, "run": s, "candidate": s}}, in one
    JSON file (per candidate-step of each kind, then the FIXED parts; any of them may be missing)."""

    def __init__(self, path: Optional[os.PathLike] = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def load(self) -> Dict[str, Dict[str, float]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Dict[str, float]:
        entry = self.load().get(key, {})
        if not isinstance(entry, dict):
            return {}
        rates = KINDS + (DETAIL,)
        times = {k: float(v) for k, v in entry.items() if k in rates and _number(v) and v > 0}
        if times:  # the fixed parts only beside step times (0 is a measurement: nothing outside the steps)
            times.update({k: float(v) for k, v in entry.items() if k in FIXED and _number(v) and v >= 0})
        return times

    def put(self, key: str, measured: Dict[str, float]) -> None:
        """Store the new values (replacing older ones of the same name), atomically."""
        data = self.load()
        entry = dict(data.get(key, {})) if isinstance(data.get(key), dict) else {}
        entry.update({k: round(float(v), 6) for k, v in measured.items() if k in KINDS + FIXED + (DETAIL,)})
        data[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".step-times-", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _both_kinds(times: Dict[str, float]) -> Optional[Dict[str, float]]:
    """Seconds per candidate-step of every kind, a measured one standing in for a missing one (by the
    cost model's shares); None before any was measured."""
    seconds_guided = times.get("guided")
    seconds_unguided = times.get("unguided")
    seconds_x0 = times.get("guided_x0")
    if seconds_guided is None and seconds_unguided is None and seconds_x0 is None:
        return None
    if seconds_guided is None:
        seconds_guided = (
            seconds_unguided / UNGUIDED_SHARE if seconds_unguided is not None else seconds_x0 / X0_SHARE
        )
    if seconds_unguided is None:
        seconds_unguided = seconds_guided * UNGUIDED_SHARE
    if seconds_x0 is None:
        seconds_x0 = seconds_guided * X0_SHARE
    return {"guided": seconds_guided, "unguided": seconds_unguided, "guided_x0": seconds_x0}


class StepTimer:
    """Collects one edit's times and stores them: one timer per edit.

    The editor calls ``begin`` when the edit starts (a no-op when the caller began earlier, to count its own
    input decoding), ``start`` at each run, ``step`` after each step and ``end_steps`` after the last run; the
    caller calls ``save`` when the user has the result (after its PNG encoding). The step medians leave out
    the first step of each run (warm-up: allocations, a compiled graph); the FIXED parts are what the median
    rate does not explain. Without ``begin`` and ``end_steps`` only the step medians are stored.
    """

    def __init__(self, store: StepTimes, key: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.samples: Dict[str, List[float]] = {kind: [] for kind in KINDS}
        self.counted: Dict[str, int] = {kind: 0 for kind in KINDS}  # candidate-steps, first ones included
        self.runs = 0
        self.candidates = 0
        self._last: Optional[float] = None
        self._first = True
        self._begin: Optional[float] = None
        self._first_run: Optional[float] = None
        self._steps_end: Optional[float] = None
        self.detail_samples: List[float] = []  # seconds per tile-step, the stage's first batch left out
        self.detail_span = 0.0  # the detail stage's whole time, kept out of the ``candidate`` part
        self._detail_begin: Optional[float] = None

    def begin(self) -> None:
        """The edit begins now (the first call counts)."""
        if self._begin is None:
            self._begin = self.clock()

    def start(self) -> None:
        """A run (one batch of candidates) begins now."""
        self._last = self.clock()
        self._first = True
        self.runs += 1
        if self._first_run is None:
            self._first_run = self._last

    def step(self, guided: bool, batch: int, x0: bool = False) -> None:
        """A step ended now: ``guided`` (``x0``: on the clean estimate) or not, for ``batch`` candidates."""
        now = self.clock()
        kind = ("guided_x0" if x0 else "guided") if guided else "unguided"
        if self._last is not None and not self._first:
            self.samples[kind].append((now - self._last) / max(1, batch))
        self.counted[kind] += max(1, batch)
        self._first = False
        self._last = now

    def begin_detail(self) -> None:
        """The detail stage begins (its first tile batch is warm-up: no sample)."""
        self._detail_begin = self.clock()
        self._last = None

    def detail_step(self, tiles: int) -> None:
        now = self.clock()
        if self._last is not None:
            self.detail_samples.append((now - self._last) / max(1, tiles))
        self._last = now

    def end_detail(self) -> None:
        if self._detail_begin is not None:
            self.detail_span += self.clock() - self._detail_begin
            self._detail_begin = None

    def end_steps(self, candidates: int) -> None:
        """The last run ended; ``candidates`` kept ones follow (ranking, compositing, encoding)."""
        self._steps_end = self.clock()
        self.candidates = int(candidates)

    def fixed(self, medians: Dict[str, float], now: float) -> Dict[str, float]:
        """The FIXED parts from the marks, given the step medians; {} unless the whole edit was timed."""
        both = _both_kinds(medians)
        marks = (self._begin, self._first_run, self._steps_end)
        if both is None or None in marks or self.runs < 1 or self.candidates < 1:
            return {}
        begin, first_run, steps_end = marks
        explained = sum(self.counted[kind] * both[kind] for kind in KINDS)
        return {
            "edit": max(0.0, first_run - begin),
            "run": max(0.0, steps_end - first_run - explained) / self.runs,
            "candidate": max(0.0, now - steps_end - self.detail_span) / self.candidates,
        }

    def save(self) -> Dict[str, float]:
        measured = {kind: statistics.median(v) for kind, v in self.samples.items() if v}
        if measured and self.detail_samples:
            measured[DETAIL] = statistics.median(self.detail_samples)
        if measured and self._steps_end is not None:
            measured.update(self.fixed(measured, self.clock()))
        if measured:
            self.store.put(self.key, measured)
        return measured


def estimate_seconds(
    params: EditParams, times: Dict[str, float], diffusion_steps: int = 1000, guided: bool = True
) -> Optional[float]:
    """Seconds for the whole edit (all candidates) from stored times; None before any step was measured.

    The candidates' steps at the stored rates, plus the stored FIXED parts: once per edit, once per run
    (``iterations_num`` runs), once per kept candidate (a file without them: the steps alone).
    """
    per_candidate = candidate_seconds(params, times, diffusion_steps, guided)
    if per_candidate is None:
        return None
    runs = int(params.iterations_num)
    return per_candidate * int(params.batch_size) * runs + edit_seconds(times, runs)


def candidate_seconds(
    params: EditParams, times: Dict[str, float], diffusion_steps: int = 1000, guided: bool = True
) -> Optional[float]:
    """Seconds per candidate: its steps and its ``candidate``
    part (ranking, compositing, encoding); None before any step was measured."""
    both = _both_kinds(times)
    if both is None:
        return None
    steps = respaced_steps(params.timestep_respacing, diffusion_steps)
    work = step_plan(params, steps, guided)
    guided_kind = "guided_x0" if params.guidance_grad == "x0" else "guided"
    return (
        work.candidate_steps(True) * both[guided_kind]
        + work.candidate_steps(False) * both["unguided"]
        + times.get("candidate", 0.0)
    )


def has_step_times(times: Dict[str, float]) -> bool:
    """Whether ``times`` hold a step rate to estimate from."""
    return _both_kinds(times) is not None


def detail_tile_seconds(times: Dict[str, float]) -> Optional[float]:
    """Seconds per detail tile-step: measured, else an unguided step's (one forward each); None before any
    step was measured."""
    if times.get(DETAIL):
        return float(times[DETAIL])
    both = _both_kinds(times)
    return None if both is None else both["unguided"]


def edit_seconds(times: Dict[str, float], runs: int = 1) -> float:
    """The seconds an edit of ``runs`` runs costs besides its candidates (0 for a file without them)."""
    return times.get("edit", 0.0) + times.get("run", 0.0) * max(1, int(runs))


def mode_estimates(
    times: Dict[str, float], preset_defaults: Dict[str, Any], diffusion_steps: int = 1000
) -> Dict[str, Optional[float]]:
    """Seconds per candidate for each mode at the preset's settings, its ``candidate`` part included (the
    docker multiplies by its count and adds ``edit_seconds``, the ``edit`` and ``run`` parts, once)."""
    estimates: Dict[str, Optional[float]] = {}
    for name in MODES:
        params = resolve_params(name, {"batch_size": 1, "iterations_num": 1}, preset_defaults)
        estimates[name] = candidate_seconds(params, times, diffusion_steps)
    return estimates


def mode_schedules(preset_defaults: Dict[str, Any], diffusion_steps: int = 1000) -> Dict[str, int]:
    """The respaced step count of each mode at the preset's settings: the plugin counts the detail stage's
    steps (a fraction of the schedule) from it in the modes whose schedule the engine sets."""
    schedules: Dict[str, int] = {}
    for name in MODES:
        params = resolve_params(name, {"batch_size": 1, "iterations_num": 1}, preset_defaults)
        schedules[name] = respaced_steps(params.timestep_respacing, diffusion_steps)
    return schedules


def describe_seconds(seconds: float) -> str:
    """'about 40 s', 'about 6 min', 'about 2.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
