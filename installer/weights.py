"""The weights: the presets to download, ``python -m engine download`` for each, and what to do by hand
when a download fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import List

from installer.environment import engine_env
from installer.layout import REPO, Layout
from installer.manifest import Manifest


def preset_files(preset: str) -> List[dict]:
    """The weight files of a built-in preset (name, SHA-256, URLs), read from the engine's data files."""
    models_dir = REPO / "engine" / "models"
    try:
        data = json.loads((models_dir / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
        files = []
        for kind in ("diffusion", "clip"):
            entry = data.get(kind)
            if isinstance(entry, str):
                entry = json.loads((models_dir / "specs" / f"{entry}.json").read_text(encoding="utf-8"))
            if isinstance(entry, dict) and entry.get("file") and not entry.get("generate"):
                files.append(
                    {"file": entry["file"], "sha256": entry.get("sha256"), "urls": entry.get("urls", [])}
                )
        return files
    except (OSError, ValueError):
        return []


def weights_help(layout: Layout, python: str, preset: str = "default") -> str:
    lines = [f"Put these files in {layout.weights_dir}:"]
    for spec in preset_files(preset):
        lines.append(f"  {spec['file']}  (SHA-256 {spec['sha256']})")
        lines.extend(f"      from {url}" for url in spec["urls"])
    lines.append("or run install.py again when online (a partial download resumes). Check them with:")
    lines.append(f"  cd {layout.engine_root} && {python} -m engine models")
    return "\n".join(lines)


def claim_weights_dir(manifest: Manifest, layout: Layout) -> None:
    """A weights folder this install makes (downloads, generated ``tiny`` files) goes on uninstall."""
    if not layout.weights_dir.exists():
        manifest.ensure_dir(layout.weights_dir.parent)
        manifest.claim(layout.weights_dir)
        layout.weights_dir.mkdir()


def presets_to_download(models: str) -> List[str]:
    """The default weights, and the built-in preset the plugin is set to use when it is another one
    (``--models sd15`` fetches Stable Diffusion 1.5 at its pinned revision as well)."""
    builtin = (REPO / "engine" / "models" / "presets" / f"{models}.json").is_file()
    return ["default"] + ([models] if builtin and Path(models).name == models and models != "default" else [])


def download_weights(manifest: Manifest, layout: Layout, python: str, preset: str = "default") -> bool:
    """``python -m engine download PRESET``: it states the size and the licence before it starts, resumes a
    partial file and checks every file's SHA-256."""
    claim_weights_dir(manifest, layout)
    command = [python, "-m", "engine", "download", preset]
    print("  " + " ".join(command))
    result = subprocess.run(command, cwd=str(layout.engine_root), env=engine_env(layout))
    if result.returncode == 0:
        return True
    print(f"\nThe {preset} weights could not be downloaded (offline, or the server refused).")
    if preset == "default":
        print(weights_help(layout, python))
    else:
        print(f"Run install.py again, or `cd {layout.engine_root} && {python} -m engine download {preset}`.")
    print("The rest of the install continues.\n")
    return False


def default_weights_present(layout: Layout) -> bool:
    files = preset_files("default")
    return bool(files) and all((layout.weights_dir / spec["file"]).is_file() for spec in files)
