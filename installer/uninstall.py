"""--uninstall: remove exactly what the manifest lists and put back what the install replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

from installer.kritarc import restore_kritarc
from installer.layout import Layout
from installer.manifest import Manifest, remove_path

ENGINE_STEP_TIMES = "step_times.json"  # engine/editing/timing.py FILE_NAME, in the per-user data folder


def uninstall(layout: Layout, keep_weights: bool = False) -> int:
    manifest = Manifest.load(layout.manifest)
    if not manifest.exists:
        print(f"Nothing to uninstall: no manifest at {layout.manifest}")
        return 0
    record = manifest.kritarc
    if record:
        restore_kritarc(record)
    kept = manifest.info.get("weights_dir") if keep_weights else None
    for key in reversed(manifest.owned):
        if key == kept:
            print(f"  kept the weights in {key} (--keep-weights)")
            continue
        remove_path(Path(key))
        print(f"  removed {key}")
    for key, backup in manifest.replaced.items():
        if Path(backup).exists():
            shutil.move(backup, key)
            print(f"  restored {key}")
    if record and record.get("backup"):
        remove_path(Path(record["backup"]))
    remove_path(layout.manifest)
    # written by the engine at run time, not by the installer: its measured step times (time estimates)
    step_times = layout.data_dir / ENGINE_STEP_TIMES
    if step_times.exists():
        remove_path(step_times)
        print(f"  removed {step_times}")
    for folder in sorted(manifest.created_dirs, key=lambda p: len(Path(p).parts), reverse=True):
        path = Path(folder)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    print("Blended Diffusion is uninstalled.")
    return 0
