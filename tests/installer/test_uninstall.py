"""installer.uninstall, and the repair a rerun is: install, damage, repair and uninstall in a throw-away HOME
leave it byte for byte as it was, what the install moved aside included."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from installer.layout import Layout
from installer.manifest import Manifest
from installer.uninstall import ENGINE_STEP_TIMES, uninstall
from tests.installer.helpers import (
    PLUGIN,
    home_env,
    load_plugin_config_module,
    make_home,
    run_install,
    snapshot,
    tree_files,
)


def data_layout(tmp_path: Path) -> Layout:
    data = tmp_path / "data"
    return Layout(
        resource_dir=tmp_path / "krita",
        kritarc=tmp_path / "kritarc",
        data_dir=data,
        config_path=tmp_path / "engine.json",
        weights_dir=data / "weights",
        venv_dir=data / "venv",
        engine_root=data / "engine",
    )


def test_without_a_manifest_nothing_is_removed(tmp_path, capsys):
    layout = data_layout(tmp_path)
    layout.data_dir.mkdir()
    (layout.data_dir / "kept.txt").write_text("not ours\n")
    assert uninstall(layout) == 0
    assert f"Nothing to uninstall: no manifest at {layout.manifest}" in capsys.readouterr().out
    assert (layout.data_dir / "kept.txt").read_text() == "not ours\n"


def test_uninstall_removes_what_is_listed_and_the_engine_step_times(tmp_path):
    layout = data_layout(tmp_path)
    manifest = Manifest(layout.manifest)
    manifest.ensure_dir(layout.data_dir)
    for folder in (layout.weights_dir, layout.engine_root):
        manifest.claim(folder)
        folder.mkdir()
        (folder / "file").write_text("x")
    manifest.info = {"weights_dir": str(layout.weights_dir)}
    manifest.save()
    (layout.data_dir / ENGINE_STEP_TIMES).write_text("{}")
    assert uninstall(layout, keep_weights=True) == 0
    assert (layout.weights_dir / "file").is_file() and not layout.engine_root.exists()
    assert sorted(p.name for p in layout.data_dir.iterdir()) == ["weights"]  # manifest and step times gone


def test_install_repair_and_uninstall_restore_home(clone, tmp_path):
    home = make_home(tmp_path)
    before = snapshot(home)
    kritarc_before = (home / ".config" / "kritarc").read_text()

    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr

    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    source = clone / "krita_plugin"
    assert (pykrita / f"{PLUGIN}.desktop").read_bytes() == (source / f"{PLUGIN}.desktop").read_bytes()
    assert tree_files(pykrita / PLUGIN) == tree_files(source / PLUGIN)
    assert tree_files(pykrita / "bridge") == tree_files(clone / "bridge")
    action = home / ".local" / "share" / "krita" / "actions" / f"{PLUGIN}.action"
    assert action.read_bytes() == (source / f"{PLUGIN}.action").read_bytes()
    assert (pykrita / "other_plugin.desktop").is_file()

    kritarc = (home / ".config" / "kritarc").read_text()
    assert kritarc == kritarc_before.replace(
        "enable_other_plugin=true\n", "enable_other_plugin=true\nenable_blended_diffusion=true\n"
    )

    config_path = home / ".config" / "blended-diffusion" / "engine.json"
    record = json.loads(config_path.read_text())
    engine_root = home / ".local" / "share" / "blended-diffusion" / "engine"
    assert record == {
        "python": os.path.abspath(sys.executable),
        "engine_root": str(engine_root),
        "models": "default",
        "weights_dir": str(home / ".local" / "share" / "blended-diffusion" / "weights"),
    }
    # The engine copy is the checkout's engine, independent of where the checkout lives.
    assert tree_files(engine_root / "engine") == tree_files(clone / "engine")
    assert tree_files(engine_root / "bridge") == tree_files(clone / "bridge")
    # The installed plugin's own reader finds and accepts the record.
    plugin_config = load_plugin_config_module(pykrita / PLUGIN)
    env = home_env(home)
    assert Path(plugin_config.engine_config_path(env, "linux")) == config_path
    loaded = plugin_config.load_engine_config(str(config_path))
    assert (loaded.python, loaded.engine_root) == (record["python"], record["engine_root"])

    # Repair: damage the install, run again, get it back.
    (pykrita / PLUGIN / "__init__.py").unlink()
    (home / ".config" / "kritarc").write_text(kritarc.replace("diffusion=true", "diffusion=false"))
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Repairing" in result.stdout
    assert tree_files(pykrita / PLUGIN) == tree_files(source / PLUGIN)
    assert (home / ".config" / "kritarc").read_text() == kritarc

    result = run_install(clone, home, "--uninstall", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(home) == before


def test_uninstall_keeps_what_existed_before(clone, tmp_path):
    """A plugin folder that was there before install.py is moved aside, not lost, and comes back."""
    home = make_home(tmp_path)
    old = home / ".local" / "share" / "krita" / "pykrita" / PLUGIN
    old.mkdir()
    (old / "__init__.py").write_text("# a hand-made older copy\n")
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=false\n")
    before = snapshot(home)
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    assert run_install(clone, home, *args).returncode == 0
    assert (old / "__init__.py").read_bytes() == (
        clone / "krita_plugin" / PLUGIN / "__init__.py"
    ).read_bytes()
    assert (home / ".config" / "kritarc").read_text() == "[python]\nenable_blended_diffusion=true\n"
    # Krita rewrites kritarc while the plugin is installed; uninstall restores only our line.
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=true\n\n[New]\nk=v\n")
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert (
        home / ".config" / "kritarc"
    ).read_text() == "[python]\nenable_blended_diffusion=false\n\n[New]\nk=v\n"
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=false\n")
    assert snapshot(home) == before
