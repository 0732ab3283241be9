"""The install manifest (what an install created or replaced) and the file copying that keeps it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from installer.errors import InstallError

MANIFEST_VERSION = 1
IGNORED_NAMES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".DS_Store")
IGNORED_SUFFIXES = (".pyc", ".pyo")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Manifest:
    """What an install created or replaced, so a rerun repairs it and --uninstall undoes exactly that.

    ``owned``: paths (files or folders) this installer wrote; ``created_dirs``: folders it had to create
    (removed on uninstall only when empty); ``replaced``: paths that existed before and were moved aside into
    the backup folder, restored on uninstall; ``kritarc``: how to restore kritarc's line.
    """

    def __init__(self, path: Path, data: Optional[dict] = None):
        self.path = path
        data = data or {}
        self.owned: List[str] = list(data.get("owned", []))
        self.created_dirs: List[str] = list(data.get("created_dirs", []))
        self.replaced: Dict[str, str] = dict(data.get("replaced", {}))
        self.kritarc: Optional[dict] = data.get("kritarc")
        self.info: dict = dict(data.get("info", {}))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InstallError(f"cannot read the install manifest {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise InstallError(f"{path} is not a manifest this installer understands")
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def save(self) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "owned": self.owned,
            "created_dirs": self.created_dirs,
            "replaced": self.replaced,
            "kritarc": self.kritarc,
            "info": self.info,
        }
        write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def ensure_dir(self, folder: Path) -> None:
        """Create ``folder`` and missing parents, remembering the ones created (top-down)."""
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            path.mkdir()
            if str(path) not in self.created_dirs:
                self.created_dirs.append(str(path))
        if missing and self.path.parent.is_dir():
            self.save()  # so an install that stops half-way can still be uninstalled

    def claim(self, target: Path) -> None:
        """Make ``target`` ours before writing it: an existing foreign path is moved aside, not lost."""
        key = str(target)
        if key in self.owned:
            return
        if target.exists() or target.is_symlink():
            self.ensure_dir(self.path.parent)
            backups = self.path.parent / "replaced"
            self.ensure_dir(backups)
            backup = backups / f"{len(self.replaced):03d}-{target.name}"
            shutil.move(str(target), str(backup))
            self.replaced[key] = str(backup)
        self.owned.append(key)
        self.save()


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ignore(_folder: str, names: List[str]) -> List[str]:
    return [n for n in names if n in IGNORED_NAMES or n.endswith(IGNORED_SUFFIXES)]


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def install_tree(manifest: Manifest, source: Path, target: Path) -> None:
    """Replace ``target`` by a copy of ``source``, staged beside it so a failure leaves the old one."""
    manifest.ensure_dir(target.parent)
    staging = target.parent / f".{target.name}.installing"
    remove_path(staging)
    shutil.copytree(source, staging, ignore=_ignore)
    manifest.claim(target)
    remove_path(target)
    os.replace(staging, target)


def install_file(manifest: Manifest, source_bytes: bytes, target: Path) -> None:
    manifest.ensure_dir(target.parent)
    manifest.claim(target)
    write_atomic(target, source_bytes)
