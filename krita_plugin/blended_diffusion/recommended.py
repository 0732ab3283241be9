"""An engine preset's recommended settings as the docker's defaults.

The engine reports them in its ``status`` reply (``models.edit_defaults``, named like the reference CLI's
options: ``timestep_respacing``, ``skip_timesteps``, ``clip_guidance_lambda``, ``aug_num``,
``batch_size`` x ``iterations_num``). Here they become the docker's settings (steps, strength, guidance
scale, augmentations, candidates). A setting the user changed (``SettingsStore.user_changed``) is kept;
the others follow the preset of the engine in use, and without a known preset the reference's values
(the settings' own defaults). Plain Python: the controller calls it on the GUI thread, and the edit
worker resolves one edit's parameters with it once the engine has answered.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Set

from .params import EditOptions, engine_params
from .settings import BY_KEY, PRESET_KEYS, SettingsStore

LABELS = {
    "steps": "{} steps",
    "guidance_scale": "guidance {:g}",
    "candidates": "{} candidates",
    "strength": "strength {:.2f}",
    "aug_num": "{} augmentations",
}
NAMES = {
    "steps": "steps",
    "guidance_scale": "guidance",
    "candidates": "candidates",
    "strength": "strength",
    "aug_num": "augmentations",
}


def engine_key(settings: SettingsStore) -> str:
    """Which engine the recommendations belong to: the local one, or a remote host:port."""
    if settings.get("engine_mode") == "remote":
        return f"remote {settings.get('remote_host')}:{settings.get('remote_port')}"
    return "local"


def preset_of(status: Mapping[str, Any]) -> "tuple[Optional[str], Dict[str, Any]]":
    """(preset name, edit_defaults) from an engine's status reply; an older engine reports neither."""
    models = status.get("models") if isinstance(status, Mapping) else None
    if not isinstance(models, Mapping):
        return None, {}
    defaults = models.get("edit_defaults")
    preset = models.get("preset")
    return (str(preset) if preset else None), (dict(defaults) if isinstance(defaults, Mapping) else {})


def _coerced(key: str, value: Any) -> Optional[Any]:
    try:
        return BY_KEY[key].coerce(value)
    except ValueError:
        return None  # outside what the docker offers: the setting's own default stays


def from_edit_defaults(edit_defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """The docker settings an engine's edit_defaults recommend (only those it sets, within the limits)."""
    found: Dict[str, Any] = {}
    respacing = str(edit_defaults.get("timestep_respacing", "")).strip()
    steps = int(respacing) if respacing.isdigit() else None  # "ddim25" or "10,10" have no single count
    if steps is not None:
        found["steps"] = steps
    skip = edit_defaults.get("skip_timesteps")
    if isinstance(skip, int) and not isinstance(skip, bool):
        total = steps if steps is not None else BY_KEY["steps"].default
        if 0 <= skip < total:
            found["strength"] = round(1.0 - skip / total, 4)
    if "clip_guidance_lambda" in edit_defaults:
        found["guidance_scale"] = edit_defaults["clip_guidance_lambda"]
    if "aug_num" in edit_defaults:
        found["aug_num"] = edit_defaults["aug_num"]
    if "batch_size" in edit_defaults or "iterations_num" in edit_defaults:
        try:
            found["candidates"] = int(edit_defaults.get("batch_size", 1)) * int(
                edit_defaults.get("iterations_num", 1)
            )
        except (TypeError, ValueError):
            pass
    checked = {key: _coerced(key, value) for key, value in found.items()}
    return {key: value for key, value in checked.items() if value is not None}


def defaults(edit_defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """Every PRESET_KEYS setting: the preset's recommendation, else the reference's value."""
    return {**{key: BY_KEY[key].default for key in PRESET_KEYS}, **from_edit_defaults(edit_defaults)}


def known(settings: SettingsStore, engine: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """What the engine last reported ({"preset", "edit_defaults"}), or None before it ever answered."""
    return settings.engine_presets.get(engine or engine_key(settings))


def apply(settings: SettingsStore, engine: Optional[str] = None) -> bool:
    """Put the current engine's defaults into the settings the user has not changed; True if any moved."""
    record = known(settings, engine) or {}
    values = defaults(record.get("edit_defaults") or {})
    moved = False
    for key, value in values.items():
        if key not in settings.user_changed and settings.values[key] != value:
            settings.values[key] = value
            moved = True
    return moved


def remember(settings: SettingsStore, status: Mapping[str, Any], engine: str) -> bool:
    """Record an engine's status reply and apply its defaults; True if a setting moved."""
    preset, edit_defaults = preset_of(status)
    settings.engine_presets[engine] = {"preset": preset, "edit_defaults": edit_defaults}
    return apply(settings, engine)


def reset(settings: SettingsStore, engine: Optional[str] = None) -> None:
    """Forget the user's changes of the preset settings and take the engine's defaults again."""
    settings.user_changed = [key for key in settings.user_changed if key not in PRESET_KEYS]
    apply(settings, engine)


def summary(settings: SettingsStore, engine: Optional[str] = None) -> str:
    """The docker's one line: where its defaults come from, and which values are the user's."""
    record = known(settings, engine)
    mine = [key for key in PRESET_KEYS if key in settings.user_changed]
    yours = f" Yours: {', '.join(NAMES[key] for key in mine)}." if mine else ""
    if record is None:
        return "Defaults: the reference's; the engine's preset is read when it first starts." + yours
    name = record.get("preset") or "?"
    recommended = from_edit_defaults(record.get("edit_defaults") or {})
    if not recommended:
        return f"Defaults: preset '{name}' recommends nothing, so the reference's." + yours
    parts = [LABELS[key].format(recommended[key]) for key in PRESET_KEYS if key in recommended]
    return f"Defaults from preset '{name}': {', '.join(parts)}." + yours


def resolve(
    options: EditOptions, edit_defaults: Mapping[str, Any], user_changed: Set[str], seed: int
) -> Dict[str, Any]:
    """One edit's engine parameters with the engine's defaults for every setting not in ``user_changed``
    (the worker calls this once the engine has answered, so even the first edit uses its preset)."""
    chosen = {key: value for key, value in defaults(edit_defaults).items() if key not in user_changed}
    return engine_params(dataclasses.replace(options, seed=seed, **chosen))
