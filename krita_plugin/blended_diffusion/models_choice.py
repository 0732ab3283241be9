"""The docker's Model choice (issue 31): the presets the engine can run here, by method ("Blended
Diffusion (paper)" / "Blended Latent Diffusion"), each with its time estimate where the engine measured one.
From the engine's status (``presets``: name, method, method_name, description, installed, estimate in
seconds per candidate). Plain Python: tested outside Krita."""

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from .estimate import describe_seconds, where

METHOD_ORDER = {"paper": 0, "latent": 1}


@dataclass(frozen=True)
class ModelChoice:
    name: str  # the preset, as `engine serve --models` takes it
    label: str  # what the drop-down shows
    tooltip: str


def loaded_preset(status: Mapping[str, Any]) -> Optional[str]:
    models = status.get("models")
    return models.get("preset") if isinstance(models, dict) else None


def choices(status: Mapping[str, Any]) -> List[ModelChoice]:
    """The installed presets, paper method first, then by name; the loaded one is always listed."""
    loaded = loaded_preset(status)
    entries = [
        e for e in status.get("presets") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)
    ]
    usable = [e for e in entries if e.get("installed") or e["name"] == loaded]
    usable.sort(key=lambda e: (METHOD_ORDER.get(str(e.get("method")), 9), e["name"]))
    device = where(str(status.get("device", "")) or None)
    out = []
    for entry in usable:
        method = str(entry.get("method_name") or entry.get("method") or "?")
        estimate = entry.get("estimate")
        timing = (
            f", {describe_seconds(float(estimate))} a candidate"
            if isinstance(estimate, (int, float)) and estimate > 0
            else ""
        )
        tooltip = str(entry.get("description") or "")
        tooltip += f"\n{method}: " + (
            f"{describe_seconds(float(estimate))} a candidate on {device} (measured by earlier edits)"
            if timing
            else "no time measured yet on this engine (its first edit measures it)"
        )
        out.append(ModelChoice(entry["name"], f"{entry['name']} — {method}{timing}", tooltip))
    return out


def current(status: Mapping[str, Any], saved: str) -> Optional[str]:
    """What the drop-down shows: the preset the user chose, else the one the engine has loaded."""
    return saved or loaded_preset(status)
