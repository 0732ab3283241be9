"""What an engine says about itself in a status reply (``EditRunner.status``): the loaded preset, the time
estimates, the presets the plugin may choose from, versions and the diagnostics report. Nothing here may
fail a status: a part that cannot be made is left out and logged."""

from __future__ import annotations

import logging
import platform
import traceback
from typing import Any, Dict, List, Optional

log = logging.getLogger("engine.jobs")


def timing_key(models: Any) -> str:
    from engine.editing.timing import store_key

    return store_key(getattr(models, "device", "cpu"), getattr(models, "preset", "?"))


def timing(models: Any, edit_defaults: Dict[str, Any]) -> Dict[str, Any]:
    """What the plugin shows before an edit: ``estimates``, seconds per candidate of each quality mode
    at the preset's settings on this device, and ``step_times``, seconds per candidate-step (guided,
    unguided) and the fixed parts (edit, run, candidate; engine/editing/timing.py), both from what
    earlier edits stored (empty before the first edit measured them). The plugin adds the ``edit``
    and ``run`` parts once to its count times the per-candidate estimate. ``schedules``: each mode's
    respaced step count at the preset's settings (the detail stage runs a fraction of it)."""
    from engine.editing.timing import StepTimes, mode_estimates, mode_schedules

    try:
        times = StepTimes().get(timing_key(models))
        return {
            "estimates": mode_estimates(times, edit_defaults),
            "step_times": times,
            "schedules": mode_schedules(edit_defaults),
        }
    except Exception:  # noqa: BLE001 - an estimate must never fail a status or a job
        log.warning("no time estimate:\n%s", traceback.format_exc())
        return {}


def presets(models: Any) -> List[Dict[str, Any]]:
    """The plugin's model choice: each preset with its method, whether it is installed here and, where
    earlier edits on this device measured its steps, seconds per candidate at its own settings (its
    schedule and strength; a latent preset's steps are its guided DDIM steps, stored under its name by
    the same timer; ``None`` where nothing was measured yet)."""
    from engine.editing.timing import StepTimes, mode_estimates, store_key
    from engine.models.catalog import catalog
    from engine.models.registry import get_preset

    device = getattr(models, "device", "cpu")
    try:
        found = catalog(getattr(models, "weights_dir", None), getattr(models, "preset", None))
        store = StepTimes()
        for entry in found:
            times = store.get(store_key(device, entry["name"]))
            estimate = None
            if times:
                estimate = mode_estimates(times, get_preset(entry["name"]).edit_defaults).get("paper")
            entry["estimate"] = estimate
        return found
    except Exception:  # noqa: BLE001 - the list must never fail a status
        log.warning("no preset list:\n%s", traceback.format_exc())
        return []


def doctor(models: Any, preset_ref: Optional[str], log_path: Optional[str]) -> Dict[str, Any]:
    """The diagnostics report (engine/diagnostics.py) for this engine, with its text for a dialog."""
    from engine import diagnostics

    try:
        weights_dir = getattr(models, "weights_dir", None)
        data = diagnostics.report(
            preset_ref or str(getattr(models, "preset", "default")),
            str(weights_dir) if weights_dir else None,
            getattr(models, "device", None),
            log_path=log_path,
            hash_files=False,  # verified when loaded; a status reply must stay fast
            estimate=diagnostics.stored_estimate(
                str(getattr(models, "preset", "")), getattr(models, "device", None)
            ),
        )
        data["text"] = diagnostics.format_report(data)
        return data
    except Exception as exc:  # noqa: BLE001 - a status reply must never fail for the report's sake
        log.warning("diagnostics failed:\n%s", traceback.format_exc())
        return {"error": f"{type(exc).__name__}: {exc}", "text": f"diagnostics failed: {exc}"}


def status(
    models: Any, edit_defaults: Dict[str, Any], preset_ref: Optional[str], log_path: Optional[str]
) -> Dict[str, Any]:
    import torch

    from engine import __version__

    versions = {"engine": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import open_clip

        versions["open_clip"] = getattr(open_clip, "__version__", "?")
    except ImportError:
        pass
    return {
        "device": str(getattr(models, "device", "?")),
        "models": {
            "preset": getattr(models, "preset", None),
            "method": getattr(models, "method", "paper"),
            "image_size": getattr(models, "image_size", None),
            "class_cond": getattr(models, "class_cond", None),
            "min_steps": int(getattr(models, "min_steps", 0)),  # a few-step preset's floor (issue 38)
            "edit_defaults": dict(edit_defaults),
        },
        **timing(models, edit_defaults),
        "presets": presets(models),
        "versions": versions,
        "doctor": doctor(models, preset_ref, log_path),
    }
