"""The docker's settings, declared once with types and limits, persisted as a JSON file.

A JSON file (next to the engine configuration) rather than Krita's kritarc keeps the settings readable
and testable outside Krita; they survive Krita restarts the same way.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .config import plugin_settings_path
from .rounds import HISTORY_LIMIT, clean_history, remember_prompt


@dataclass(frozen=True)
class Setting:
    key: str
    kind: type
    default: Any
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[Sequence[str]] = None
    doc: str = ""

    def coerce(self, value: Any) -> Any:
        """The value converted to this setting's type; ValueError naming the setting when it cannot be."""
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1")
                result: Any = bool(value)
            elif self.kind is int:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError(value)
                result = int(float(value))
            elif self.kind is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                result = float(value)
            else:
                result = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting '{self.key}' must be a {self.kind.__name__}, got {value!r}") from None
        if self.minimum is not None and result < self.minimum:
            raise ValueError(f"setting '{self.key}' must be >= {self.minimum}, got {result}")
        if self.maximum is not None and result > self.maximum:
            raise ValueError(f"setting '{self.key}' must be <= {self.maximum}, got {result}")
        if self.choices is not None and result not in self.choices:
            raise ValueError(f"setting '{self.key}' must be one of {', '.join(self.choices)}, got {result!r}")
        return result


SETTINGS = (
    Setting("prompt", str, "", doc="last prompt"),
    Setting("candidates", int, 4, 1, 16, doc="number of candidates"),
    Setting("strength", float, 0.75, 0.01, 1.0, doc="1 - skip_timesteps / steps"),
    Setting("scribble", bool, False),
    Setting("background", bool, False),
    Setting("removal", bool, False),
    Setting("seed_mode", str, "random", choices=("random", "fixed")),
    Setting("seed", int, 404, 0, 2**31 - 1),
    Setting("steps", int, 100, 2, 1000),
    Setting("aug_num", int, 8, 1, 64),
    Setting("guidance_scale", float, 1000.0, 0.0, 100000.0),
    Setting("baseline", bool, False),
    Setting("ddim", bool, False),
    Setting("live_preview", bool, True),
    Setting("vary_strength", float, 0.5, 0.01, 1.0, doc="Vary: strength of a variation of a candidate"),
    Setting("quality", str, "paper", choices=("paper", "balanced", "fast"), doc="engine quality mode"),
    Setting("detail", str, "off", choices=("off", "auto", "on"), doc="full-resolution detail pass"),
    Setting("engine_mode", str, "local", choices=("local", "remote")),
    Setting("models", str, "", doc="engine preset (the Model choice); empty: the one install.py recorded"),
    Setting("device", str, "", doc="empty: the engine picks cuda / mps / cpu"),
    Setting("remote_host", str, "127.0.0.1"),
    Setting("remote_port", int, 7860, 1, 65535),
    Setting("remote_token", str, ""),
    Setting("remote_fingerprint", str, "", doc="SHA-256 of the engine TLS certificate; empty: no TLS"),
    # Extend Canvas with Text: pixels to add per side and each side's own prompt (empty: the main prompt)
    Setting("extend_left", int, 0, 0, 16384),
    Setting("extend_right", int, 256, 0, 16384),
    Setting("extend_top", int, 0, 0, 16384),
    Setting("extend_bottom", int, 0, 0, 16384),
    Setting("extend_prompt_left", str, ""),
    Setting("extend_prompt_right", str, ""),
    Setting("extend_prompt_top", str, ""),
    Setting("extend_prompt_bottom", str, ""),
)
BY_KEY: Dict[str, Setting] = {s.key: s for s in SETTINGS}
# The settings an engine preset may recommend (its edit_defaults); see recommended.py.
PRESET_KEYS = ("candidates", "strength", "steps", "guidance_scale", "aug_num")


class SettingsStore:
    """Typed settings backed by a JSON file; unknown or invalid stored values fall back to the default."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or plugin_settings_path()
        self.values: Dict[str, Any] = {s.key: s.default for s in SETTINGS}
        # PRESET_KEYS the user changed: kept when an engine's recommended settings arrive.
        self.user_changed: List[str] = []
        # What each engine last reported: {engine: {"preset": name, "edit_defaults": {...}}}.
        self.engine_presets: Dict[str, Dict[str, Any]] = {}
        self.prompt_history: List[str] = []  # recent prompts, newest first (the prompt field's drop-down)
        self.load()

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError):
            return  # first run or unreadable file: keep the defaults
        if not isinstance(stored, dict):
            return
        changed = stored.get("user_changed")
        if isinstance(changed, list):
            self.user_changed = [key for key in PRESET_KEYS if key in changed]
        elif "user_changed" not in stored:
            # Written before presets could set defaults: a stored value other than the reference's was
            # the user's choice, and stays so.
            self.user_changed = [
                key for key in PRESET_KEYS if key in stored and stored[key] != BY_KEY[key].default
            ]
        self.prompt_history = clean_history(stored.get("prompt_history"))
        presets = stored.get("engine_presets")
        if isinstance(presets, dict):
            self.engine_presets = {
                str(engine): {"preset": record.get("preset"), "edit_defaults": record["edit_defaults"]}
                for engine, record in presets.items()
                if isinstance(record, dict) and isinstance(record.get("edit_defaults"), dict)
            }
        for key, value in stored.items():
            setting = BY_KEY.get(key)
            if setting is None:
                continue
            try:
                self.values[key] = setting.coerce(value)
            except ValueError:
                pass

    def get(self, key: str) -> Any:
        return self.values[BY_KEY[key].key]

    def set(self, key: str, value: Any) -> None:
        if key not in BY_KEY:
            raise KeyError(f"unknown setting '{key}'")
        self.values[key] = BY_KEY[key].coerce(value)

    def mark_changed(self, key: str) -> None:
        """The user chose this value: an engine's recommendation no longer replaces it."""
        if key in PRESET_KEYS and key not in self.user_changed:
            self.user_changed.append(key)

    def remember_prompt(self, prompt: str) -> None:
        """Put ``prompt`` first in the history (at most HISTORY_LIMIT kept); empty prompts are not kept."""
        self.prompt_history = remember_prompt(self.prompt_history, prompt, HISTORY_LIMIT)

    def save(self) -> None:
        """Write atomically: a crash mid-write never leaves a half-written settings file."""
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                data = dict(
                    self.values,
                    user_changed=self.user_changed,
                    engine_presets=self.engine_presets,
                    prompt_history=self.prompt_history,
                )
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


_shared: Optional[SettingsStore] = None


def shared_store() -> SettingsStore:
    """The settings of this Krita session, one object for the docker and the scripting API (so a prompt
    history written by one is the other's, and neither overwrites the other's file)."""
    global _shared
    if _shared is None:
        _shared = SettingsStore()
    return _shared
