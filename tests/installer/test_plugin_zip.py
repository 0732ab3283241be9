"""installer.plugin_zip: the archive Krita's Tools > Scripts > Import Python Plugin from File accepts."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from installer.errors import InstallError
from installer.plugin_zip import build_zip, zip_entries
from tests.installer.helpers import KRITA_IMPORTER, PLUGIN, tree_files


def test_every_folder_has_its_own_entry_before_its_files():
    names = [name for name, _ in zip_entries()]
    assert len(names) == len(set(names))
    folders = {name for name, source in zip_entries() if source is None}
    assert all(name.endswith("/") for name in folders) and f"{PLUGIN}/_vendor/bridge/" in folders
    for index, name in enumerate(names):
        parent = name.rstrip("/").rpartition("/")[0]
        assert not parent or parent + "/" in names[:index], name


def test_a_folder_or_a_missing_folder_is_no_zip_target(tmp_path):
    with pytest.raises(InstallError, match="is a folder"):
        build_zip(tmp_path)
    with pytest.raises(InstallError, match="does not exist"):
        build_zip(tmp_path / "no" / "such.zip")
    assert list(tmp_path.iterdir()) == []


def test_zip_holds_what_krita_expects(clone, tmp_path):
    target = tmp_path / "blended_diffusion.zip"
    result = subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        desktop = archive.read(f"{PLUGIN}.desktop").decode()
    assert f"X-KDE-Library={PLUGIN}" in desktop
    # Krita's importer looks for the folder entry "<name>/" with "<name>/__init__.py" inside it.
    assert f"{PLUGIN}/" in names and f"{PLUGIN}/__init__.py" in names and f"{PLUGIN}.action" in names
    assert f"{PLUGIN}/_vendor/bridge/" in names and f"{PLUGIN}/_vendor/bridge/client.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    package_files = {
        n[len(PLUGIN) + 1 :] for n in names if n.startswith(f"{PLUGIN}/") and not n.endswith("/")
    }
    assert {p for p in package_files if not p.startswith("_vendor/")} == set(
        tree_files(clone / "krita_plugin" / PLUGIN)
    )
    again = tmp_path / "again.zip"
    subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(again)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert again.read_bytes() == target.read_bytes()  # reproducible


@pytest.mark.skipif(not KRITA_IMPORTER.is_file(), reason=f"Krita's importer not found at {KRITA_IMPORTER}")
def test_krita_importer_extracts_the_zip(clone, tmp_path):
    """Krita's own importer module (Tools > Scripts > Import Python Plugin from File) accepts the archive."""
    target = tmp_path / "blended_diffusion.zip"
    subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    resources = tmp_path / "resources"
    resources.mkdir()
    result = subprocess.run(
        [sys.executable, str(KRITA_IMPORTER), str(target), str(resources)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Imported plugin:" in result.stdout
    pykrita = resources / "pykrita"
    assert (pykrita / f"{PLUGIN}.desktop").is_file()
    assert (resources / "actions" / f"{PLUGIN}.action").is_file()
    installed = tree_files(pykrita / PLUGIN)
    assert {k: v for k, v in installed.items() if not k.startswith("_vendor")} == tree_files(
        clone / "krita_plugin" / PLUGIN
    )
    assert {
        k[len("_vendor/bridge/") :]: v for k, v in installed.items() if k.startswith("_vendor")
    } == tree_files(clone / "bridge")
