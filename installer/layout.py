"""Where things go: Krita's resource folder and kritarc, this project's per-user folders, and the checkout.

The same rules as the plugin (``blended_diffusion.config``) and the engine (``registry``) use, per platform.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# The checkout install.py runs from: what it copies, and the engine root of --engine-from-repo.
REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "blended_diffusion"
APP_NAME = "blended-diffusion"
MANIFEST_NAME = "install-manifest.json"


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or env.get("USERPROFILE") or os.path.expanduser("~"))


def is_windows(platform: str) -> bool:
    return platform.startswith("win")


def krita_resource_dir(env: Mapping[str, str], platform: str) -> Path:
    """Krita's per-user resource folder (pykrita/ and actions/ live in it)."""
    home = _home(env)
    if is_windows(platform):
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "krita"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "krita"
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "krita"


def kritarc_path(env: Mapping[str, str], platform: str) -> Path:
    home = _home(env)
    if is_windows(platform):
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "kritarc"
    if platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kritarc"


def user_data_dir(env: Mapping[str, str], platform: str) -> Path:
    """Per-user data folder of this project: venv, engine copy, weights, manifest."""
    home = _home(env)
    if is_windows(platform):
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME


def engine_config_path(env: Mapping[str, str], platform: str) -> Path:
    """Same rule as the plugin's ``blended_diffusion.config.engine_config_path()``."""
    explicit = env.get("BLENDED_DIFFUSION_CONFIG")
    if explicit:
        return Path(explicit)
    home = _home(env)
    if is_windows(platform):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return base / APP_NAME / "engine.json"


def default_weights_dir(env: Mapping[str, str], platform: str) -> Path:
    """Same rule as the engine's ``registry.default_weights_dir()``."""
    explicit = env.get("BLENDED_DIFFUSION_WEIGHTS")
    if explicit:
        return Path(explicit).expanduser()
    return user_data_dir(env, platform) / "weights"


def venv_python(env_dir: Path, platform: str = sys.platform) -> Path:
    return env_dir / ("Scripts/python.exe" if is_windows(platform) else "bin/python")


@dataclass
class Layout:
    resource_dir: Path
    kritarc: Path
    data_dir: Path
    config_path: Path
    weights_dir: Path
    venv_dir: Path
    engine_root: Path

    @property
    def manifest(self) -> Path:
        return self.data_dir / MANIFEST_NAME

    @property
    def pykrita(self) -> Path:
        return self.resource_dir / "pykrita"

    @property
    def actions(self) -> Path:
        return self.resource_dir / "actions"

    @property
    def backup_dir(self) -> Path:
        return self.data_dir / "replaced"

    @property
    def first_edit_dir(self) -> Path:
        return self.data_dir / "first-edit"


def make_layout(args: argparse.Namespace, env: Mapping[str, str], platform: str) -> Layout:
    data_dir = user_data_dir(env, platform)
    return Layout(
        resource_dir=Path(args.krita_dir).expanduser().absolute()
        if args.krita_dir
        else krita_resource_dir(env, platform),
        kritarc=Path(args.kritarc).expanduser().absolute() if args.kritarc else kritarc_path(env, platform),
        data_dir=data_dir,
        config_path=engine_config_path(env, platform),
        weights_dir=Path(args.weights_dir).expanduser().absolute()
        if args.weights_dir
        else default_weights_dir(env, platform),
        venv_dir=Path(args.venv).expanduser().absolute() if args.venv else data_dir / "venv",
        engine_root=REPO if args.engine_from_repo else data_dir / "engine",
    )
