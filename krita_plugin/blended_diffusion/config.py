"""Where install.py records the engine, and reading that record.

The engine configuration is a JSON file with the keys ``python`` (the engine environment's interpreter),
``engine_root`` (the folder holding the ``engine`` and ``bridge`` packages), ``models`` (preset name or a
folder with ``preset.json``) and ``weights_dir`` (may be null: the engine's default). install.py writes it
at :func:`engine_config_path`; the plugin only reads it.
"""

import json
import os
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

from .errors import EngineNotInstalledError

APP_DIR_NAME = "blended-diffusion"
CONFIG_ENV = "BLENDED_DIFFUSION_CONFIG"


def user_config_dir(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> str:
    """The per-user configuration folder of the project (not created here)."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    home = env.get("HOME") or os.path.expanduser("~")
    if plat.startswith("win"):
        base = env.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    elif plat == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    else:
        base = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, APP_DIR_NAME)


def engine_config_path(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> str:
    """``$BLENDED_DIFFUSION_CONFIG`` if set, else ``<user config dir>/engine.json``.

    The user config dir is ``~/.config/blended-diffusion`` on Linux (``$XDG_CONFIG_HOME`` respected),
    ``%APPDATA%\\blended-diffusion`` on Windows and
    ``~/Library/Application Support/blended-diffusion`` on macOS.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(CONFIG_ENV)
    if explicit:
        return explicit
    return os.path.join(user_config_dir(env, platform), "engine.json")


def plugin_settings_path(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> str:
    """The docker's persisted settings live next to the engine configuration."""
    return os.path.join(os.path.dirname(engine_config_path(environ, platform)) or ".", "plugin-settings.json")


@dataclass(frozen=True)
class EngineConfig:
    python: str
    engine_root: str
    models: str = "default"
    weights_dir: Optional[str] = None


def parse_engine_config(data: object, source: str = "engine.json") -> EngineConfig:
    """Validate the JSON object install.py wrote; raises EngineNotInstalledError naming what is wrong."""
    if not isinstance(data, dict):
        raise EngineNotInstalledError(f"{source} does not hold a JSON object")
    for key in ("python", "engine_root"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise EngineNotInstalledError(f"{source} has no '{key}'")
    models = data.get("models") or "default"
    weights_dir = data.get("weights_dir")
    if not isinstance(models, str):
        raise EngineNotInstalledError(f"{source}: 'models' must be a string")
    if weights_dir is not None and not isinstance(weights_dir, str):
        raise EngineNotInstalledError(f"{source}: 'weights_dir' must be a string or null")
    return EngineConfig(data["python"], data["engine_root"], models, weights_dir or None)


def load_engine_config(path: Optional[str] = None, check_files: bool = True) -> EngineConfig:
    """Read the engine record; with ``check_files`` also check the interpreter and engine folder exist."""
    path = path or engine_config_path()
    if not os.path.isfile(path):
        raise EngineNotInstalledError(f"no engine configuration at {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EngineNotInstalledError(f"cannot read {path}: {exc}") from exc
    config = parse_engine_config(data, path)
    if check_files:
        if not os.path.isfile(config.python):
            raise EngineNotInstalledError(f"the engine's Python {config.python} does not exist")
        if not os.path.isdir(os.path.join(config.engine_root, "engine")):
            raise EngineNotInstalledError(f"no 'engine' package in {config.engine_root}")
    return config
