"""The docker's settings, declared once with types and limits, persisted as a JSON file.

A JSON file (next to the engine configuration) rather than Krita's kritarc keeps the settings readable
and testable outside Krita; they survive Krita restarts the same way.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from .config import plugin_settings_path


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
    Setting("quality", str, "paper", choices=("paper", "balanced", "fast"), doc="engine quality mode"),
    Setting("engine_mode", str, "local", choices=("local", "remote")),
    Setting("device", str, "", doc="empty: the engine picks cuda / mps / cpu"),
    Setting("remote_host", str, "127.0.0.1"),
    Setting("remote_port", int, 7860, 1, 65535),
    Setting("remote_token", str, ""),
)
BY_KEY: Dict[str, Setting] = {s.key: s for s in SETTINGS}


class SettingsStore:
    """Typed settings backed by a JSON file; unknown or invalid stored values fall back to the default."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or plugin_settings_path()
        self.values: Dict[str, Any] = {s.key: s.default for s in SETTINGS}
        self.load()

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError):
            return  # first run or unreadable file: keep the defaults
        if not isinstance(stored, dict):
            return
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

    def save(self) -> None:
        """Write atomically: a crash mid-write never leaves a half-written settings file."""
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.values, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
