"""Step times measured on this device, stored per device and preset, and the time estimates made from them.

Each edit records how long its steps took per candidate (guided steps and unguided ones apart: an unguided
step is one UNet forward, a guided one a forward, a backward and CLIP). The medians are kept in
``step_times.json`` in the per-user data folder, keyed by device and preset, so the next edit's estimate
("about 6 min on this CPU") comes from this machine's own speed. Before the first edit there is nothing to
estimate from: the estimate is None and the first edit measures.

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

from engine.editing.modes import MODES, plan, resolve_params, respaced_steps
from engine.editing.params import EditParams

FILE_NAME = "step_times.json"
PATH_ENV = "BLENDED_DIFFUSION_STEP_TIMES"  # another file than the per-user one (tests, benches)
KINDS = ("guided", "unguided")
# The unguided step costs about a third of a guided one (one forward against forward + backward + CLIP):
# the estimate's stand-in until an unguided step was measured.
UNGUIDED_SHARE = 1 / 3.4


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
    """The stored seconds per candidate-step, {key: {"guided": s, "unguided": s}}, in one JSON file."""

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
        return {k: float(v) for k, v in entry.items() if k in KINDS and isinstance(v, (int, float)) and v > 0}

    def put(self, key: str, measured: Dict[str, float]) -> None:
        """Store the new medians (replacing older ones of the same kind), atomically."""
        data = self.load()
        entry = dict(data.get(key, {}))
        entry.update({k: round(float(v), 6) for k, v in measured.items() if k in KINDS})
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


class StepTimer:
    """Collects one edit's step times (the editor calls ``step`` after each step) and stores the medians.

    The first step of each run is left out: it pays for warm-up (allocations, a compiled graph).
    """

    def __init__(self, store: StepTimes, key: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.samples: Dict[str, List[float]] = {kind: [] for kind in KINDS}
        self._last: Optional[float] = None
        self._first = True

    def start(self) -> None:
        """A run (one batch of candidates) begins now."""
        self._last = self.clock()
        self._first = True

    def step(self, guided: bool, batch: int) -> None:
        now = self.clock()
        if self._last is not None and not self._first:
            self.samples["guided" if guided else "unguided"].append((now - self._last) / max(1, batch))
        self._first = False
        self._last = now

    def save(self) -> Dict[str, float]:
        measured = {kind: statistics.median(v) for kind, v in self.samples.items() if v}
        if measured:
            self.store.put(self.key, measured)
        return measured


def estimate_seconds(
    params: EditParams, times: Dict[str, float], diffusion_steps: int = 1000, guided: bool = True
) -> Optional[float]:
    """Seconds for the whole edit (all candidates) from stored step times; None before any was measured."""
    seconds_guided = times.get("guided")
    seconds_unguided = times.get("unguided")
    if seconds_guided is None and seconds_unguided is None:
        return None
    if seconds_unguided is None:
        seconds_unguided = seconds_guided * UNGUIDED_SHARE
    if seconds_guided is None:
        seconds_guided = seconds_unguided / UNGUIDED_SHARE
    steps = respaced_steps(params.timestep_respacing, diffusion_steps)
    work = plan(params, steps, guided)
    per_candidate = (
        work.candidate_steps(True) * seconds_guided + work.candidate_steps(False) * seconds_unguided
    )
    return per_candidate * int(params.batch_size) * int(params.iterations_num)


def mode_estimates(
    times: Dict[str, float], preset_defaults: Dict[str, Any], diffusion_steps: int = 1000
) -> Dict[str, Optional[float]]:
    """Seconds per candidate for each mode at the preset's settings (the docker multiplies by its count)."""
    estimates: Dict[str, Optional[float]] = {}
    for name in MODES:
        params = resolve_params(name, {"batch_size": 1, "iterations_num": 1}, preset_defaults)
        estimates[name] = estimate_seconds(params, times, diffusion_steps)
    return estimates


def describe_seconds(seconds: float) -> str:
    """'about 40 s', 'about 6 min', 'about 2.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
