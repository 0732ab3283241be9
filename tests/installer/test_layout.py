"""installer.layout: where Krita's folders, kritarc and this project's per-user folders are, per platform."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from installer import layout
from tests.installer.helpers import PLUGIN, REPO, load_plugin_config_module


@pytest.mark.parametrize(
    "platform, env, resources, kritarc, config, data",
    [
        (
            "linux",
            {"HOME": "/h"},
            "/h/.local/share/krita",
            "/h/.config/kritarc",
            "/h/.config/blended-diffusion/engine.json",
            "/h/.local/share/blended-diffusion",
        ),
        (
            "linux",
            {"HOME": "/h", "XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"},
            "/d/krita",
            "/c/kritarc",
            "/c/blended-diffusion/engine.json",
            "/d/blended-diffusion",
        ),
        (
            "win32",
            {"HOME": "/h", "APPDATA": "/ad", "LOCALAPPDATA": "/lad"},
            "/ad/krita",
            "/lad/kritarc",
            "/ad/blended-diffusion/engine.json",
            "/lad/blended-diffusion",
        ),
        (
            "darwin",
            {"HOME": "/h"},
            "/h/Library/Application Support/krita",
            "/h/Library/Preferences/kritarc",
            "/h/Library/Application Support/blended-diffusion/engine.json",
            "/h/Library/Application Support/blended-diffusion",
        ),
    ],
)
def test_paths_per_platform(platform, env, resources, kritarc, config, data):
    assert layout.krita_resource_dir(env, platform) == Path(resources)
    assert layout.kritarc_path(env, platform) == Path(kritarc)
    assert layout.engine_config_path(env, platform) == Path(config)
    assert layout.user_data_dir(env, platform) == Path(data)
    assert layout.default_weights_dir(env, platform) == Path(data) / "weights"
    assert layout.engine_config_path({**env, "BLENDED_DIFFUSION_CONFIG": "/x.json"}, platform) == Path(
        "/x.json"
    )


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_engine_config_path_agrees_with_the_plugin(platform):
    config = load_plugin_config_module(REPO / "krita_plugin" / PLUGIN)
    for env in (
        {"HOME": "/h", "APPDATA": "/ad"},
        {"HOME": "/h", "XDG_CONFIG_HOME": "/c", "APPDATA": "/ad"},
        {"HOME": "/h", "BLENDED_DIFFUSION_CONFIG": "/e.json"},
    ):
        assert Path(config.engine_config_path(env, platform)) == layout.engine_config_path(env, platform)


def test_options_override_the_default_folders(tmp_path):
    env = {"HOME": str(tmp_path / "h")}
    args = argparse.Namespace(
        krita_dir=str(tmp_path / "k"),
        kritarc=None,
        weights_dir=None,
        venv=str(tmp_path / "v"),
        engine_from_repo=True,
    )
    found = layout.make_layout(args, env, "linux")
    assert found.pykrita == tmp_path / "k" / "pykrita" and found.actions == tmp_path / "k" / "actions"
    assert found.kritarc == tmp_path / "h" / ".config" / "kritarc"
    assert found.venv_dir == tmp_path / "v" and found.engine_root == REPO
    data = tmp_path / "h" / ".local" / "share" / "blended-diffusion"
    assert found.weights_dir == data / "weights" and found.manifest == data / "install-manifest.json"
    args = argparse.Namespace(
        krita_dir=None, kritarc=None, weights_dir=None, venv=None, engine_from_repo=False
    )
    assert layout.make_layout(args, env, "linux").engine_root == data / "engine"
    assert layout.venv_python(Path("v"), "win32") == Path("v/Scripts/python.exe")
    assert layout.venv_python(Path("v"), "linux") == Path("v/bin/python")
