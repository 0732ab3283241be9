"""What the installer's tests share: a copy of the working tree to run install.py from, a throw-away HOME
and its environment, and byte-for-byte snapshots of a folder.

The subprocess tests run install.py from a copy of the working tree (what a fresh clone would hold) with a
temporary HOME and XDG folders, so nothing here touches the real user's Krita.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")
PLUGIN = "blended_diffusion"
SKIP_PARTS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}


def copy_working_tree(destination: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files: what a clone of the current state would hold."""
    try:
        listed = (
            subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            .stdout.decode("utf-8")
            .split("\0")
        )
        files = [name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        files = [
            str(p.relative_to(REPO))
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(REPO).parts)
        ]
    for name in files:
        source = REPO / name
        if source.is_file() and not SKIP_PARTS.intersection(Path(name).parts):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def home_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDED_DIFFUSION_", "XDG_"))}
    for key in ("APPDATA", "LOCALAPPDATA", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    # pip runs `rustc --version` for its user agent; rustup's shim would write ~/.rustup into the test HOME.
    for key, folder in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        if key not in env and (Path.home() / folder).is_dir():
            env[key] = str(Path.home() / folder)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONDONTWRITEBYTECODE="1",
        PIP_NO_CACHE_DIR="1",
    )
    return env


def run_install(clone_dir: Path, home: Path, *args: str, env_extra: dict | None = None):
    env = home_env(home)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(clone_dir / "install.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(root: Path) -> dict:
    """Every path under root with its kind and content hash: equal snapshots mean byte-equal trees."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = ("dir", None)
        else:
            state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def tree_files(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(root).parts) and p.suffix != ".pyc"
    }


def make_home(tmp_path: Path) -> Path:
    """A HOME that already holds a kritarc with other settings and another plugin."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "kritarc").write_text(
        "[General]\nLastPreset=Basic-5\n\n[python]\nenable_other_plugin=true\n\n[Window]\nMaximized=false\n"
    )
    other = home / ".local" / "share" / "krita" / "pykrita"
    other.mkdir(parents=True)
    (other / "other_plugin.desktop").write_text("[Desktop Entry]\nX-KDE-Library=other_plugin\n")
    (home / ".bashrc").write_text("# unrelated\n")
    return home


def load_plugin_config_module(pykrita_package: Path) -> types.ModuleType:
    """Import the plugin's config.py without its package __init__ (which needs Krita)."""
    package = types.ModuleType("_bd_plugin_pkg")
    package.__path__ = [str(pykrita_package)]
    sys.modules["_bd_plugin_pkg"] = package
    sys.modules.pop("_bd_plugin_pkg.config", None)
    sys.modules.pop("_bd_plugin_pkg.errors", None)
    return __import__("_bd_plugin_pkg.config", fromlist=["engine_config_path"])
