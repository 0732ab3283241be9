"""installer.copying: the plugin into Krita's folders, the engine code into the per-user data folder (or the
checkout recorded instead), and the check that the checkout holds what is copied."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from installer.copying import install_plugin
from installer.layout import make_layout
from installer.manifest import Manifest
from tests.installer.helpers import PLUGIN, REPO, make_home, run_install, tree_files


def test_install_plugin_copies_the_plugin_and_the_bridge_beside_it(tmp_path):
    args = argparse.Namespace(
        krita_dir=str(tmp_path / "krita"), kritarc=None, weights_dir=None, venv=None, engine_from_repo=False
    )
    layout = make_layout(args, {"HOME": str(tmp_path / "home")}, "linux")
    manifest = Manifest(layout.manifest)
    manifest.ensure_dir(layout.data_dir)  # as install.py does before its steps
    install_plugin(manifest, layout)
    source = REPO / "krita_plugin"
    assert tree_files(layout.pykrita / PLUGIN) == tree_files(source / PLUGIN)
    assert tree_files(layout.pykrita / "bridge") == tree_files(REPO / "bridge")
    assert (layout.actions / f"{PLUGIN}.action").read_bytes() == (source / f"{PLUGIN}.action").read_bytes()
    assert set(Manifest.load(layout.manifest).owned) == {
        str(layout.pykrita / f"{PLUGIN}.desktop"),
        str(layout.pykrita / PLUGIN),
        str(layout.pykrita / "bridge"),
        str(layout.actions / f"{PLUGIN}.action"),
    }


def test_an_incomplete_checkout_is_named_and_nothing_is_written(tmp_path):
    """install.py and its package alone, without the plugin and the engine: exit status 2, what is missing."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "installer", checkout / "installer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "install.py", checkout)
    home = make_home(tmp_path)
    result = run_install(checkout, home, "--no-venv", "--no-weights", "--no-first-edit", "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"this checkout ({checkout}) is incomplete; missing: krita_plugin/{PLUGIN}.desktop" in result.stderr
    )
    assert not (home / ".local" / "share" / "blended-diffusion").exists()
    zipped = subprocess.run(
        [sys.executable, str(checkout / "install.py"), "--zip", str(tmp_path / "x.zip")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert zipped.returncode == 2 and "is incomplete" in zipped.stderr and not (tmp_path / "x.zip").exists()


def test_engine_from_repo_records_the_checkout(clone, tmp_path):
    home = make_home(tmp_path)
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args, "--engine-from-repo", "--models", "tiny")
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert record["engine_root"] == str(clone) and record["models"] == "tiny"
    assert not (home / ".local" / "share" / "blended-diffusion" / "engine").exists()
