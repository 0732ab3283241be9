"""--zip: the archive Krita's Tools > Scripts > Import Python Plugin from File accepts."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import List

from installer.copying import check_sources
from installer.errors import InstallError
from installer.layout import PLUGIN_NAME, REPO
from installer.manifest import IGNORED_NAMES, IGNORED_SUFFIXES

# Krita's importer only extracts the package folder the .desktop names, so the zip carries bridge inside it.
ZIP_VENDOR_DIR = "_vendor"
# Fixed timestamp so the same sources give the same zip bytes.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def zip_entries() -> List[tuple]:
    """(archive name, source path or None for a folder) in the layout Krita's plugin importer reads."""
    entries: List[tuple] = [
        (f"{PLUGIN_NAME}.desktop", REPO / "krita_plugin" / f"{PLUGIN_NAME}.desktop"),
        (f"{PLUGIN_NAME}.action", REPO / "krita_plugin" / f"{PLUGIN_NAME}.action"),
    ]

    def add_tree(source: Path, prefix: str) -> None:
        # The importer finds the package by its folder entry ("name/"), so folders get entries of their own.
        entries.append((prefix + "/", None))
        for child in sorted(source.iterdir()):
            if child.name in IGNORED_NAMES or child.name.endswith(IGNORED_SUFFIXES):
                continue
            if child.is_dir():
                add_tree(child, f"{prefix}/{child.name}")
            else:
                entries.append((f"{prefix}/{child.name}", child))

    add_tree(REPO / "krita_plugin" / PLUGIN_NAME, PLUGIN_NAME)
    vendor = f"{PLUGIN_NAME}/{ZIP_VENDOR_DIR}"
    entries.append((vendor + "/", None))
    add_tree(REPO / "bridge", f"{vendor}/bridge")
    return entries


def build_zip(target: Path) -> None:
    check_sources()
    target = target.expanduser().absolute()
    if target.is_dir():
        raise InstallError(f"--zip {target} is a folder; give a file name such as blended_diffusion.zip")
    if not target.parent.is_dir():
        raise InstallError(f"--zip: the folder {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, source in zip_entries():
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                if source is None:
                    info.external_attr = (0o40755 << 16) | 0x10
                    archive.writestr(info, b"")
                else:
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, source.read_bytes())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"Wrote {target}: import it in Krita with Tools > Scripts > Import Python Plugin from File,")
    print("restart Krita, then run `python3 install.py --no-plugin` (or set the engine up by hand, see")
    print("docs/install.md) so the plugin finds an engine.")
