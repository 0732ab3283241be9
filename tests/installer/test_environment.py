"""installer.environment: the pip runs that fill the engine's environment, the venv that reuses an installed
torch, and the environment the engine runs in."""

from __future__ import annotations

import json
import os
import sys

from installer import environment
from installer.layout import Layout, venv_python
from installer.torch_index import TORCH_CPU_INDEX
from tests.installer.helpers import make_home, run_install, snapshot


def test_pip_commands_take_torch_from_its_index_first(tmp_path):
    requirements = tmp_path / "engine.txt"
    requirements.write_text("# pins\ntorch==2.14.1\ntorchvision==0.29.1 ; sys_platform != 'x'\npillow>=10\n")
    assert environment.read_pins(requirements) == {"torch": "2.14.1", "torchvision": "0.29.1"}
    first, second = environment.pip_commands("py", requirements, TORCH_CPU_INDEX)
    assert first[-4:] == ["torch==2.14.1", "torchvision==0.29.1", "--index-url", TORCH_CPU_INDEX]
    assert second[-2:] == ["-r", str(requirements)]
    assert len(environment.pip_commands("py", requirements, None)) == 1


def test_the_engine_runs_with_its_root_on_the_path_and_its_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    folders = {name: tmp_path / name for name in ("res", "data", "weights", "venv", "engine")}
    layout = Layout(
        resource_dir=folders["res"],
        kritarc=tmp_path / "kritarc",
        data_dir=folders["data"],
        config_path=tmp_path / "engine.json",
        weights_dir=folders["weights"],
        venv_dir=folders["venv"],
        engine_root=folders["engine"],
    )
    env = environment.engine_env(layout)
    assert env["PYTHONPATH"] == str(folders["engine"]) + os.pathsep + "/elsewhere"
    assert (
        env["BLENDED_DIFFUSION_WEIGHTS"] == str(folders["weights"]) and env["PYTHONDONTWRITEBYTECODE"] == "1"
    )


def test_venv_is_created_reusing_an_installed_torch(clone, tmp_path):
    """The venv code path made cheap: the test interpreter has the pinned torch, so nothing downloads."""
    pin = environment.read_pins(clone / "requirements" / "engine.txt")["torch"]
    have = environment.installed_version(sys.executable, "torch")
    assert have and have.split("+")[0] == pin, "the test environment must hold the pinned torch"
    home = make_home(tmp_path)
    before = snapshot(home)
    venv_dir = home / "engine-venv"
    args = [
        "--venv",
        str(venv_dir),
        "--reuse-python",
        sys.executable,
        "--no-weights",
        "--no-first-edit",
        "--yes",
    ]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"reusing torch {have}" in result.stdout
    python = venv_python(venv_dir)
    assert (venv_dir / "pyvenv.cfg").is_file() and python.exists()
    assert environment.installed_version(str(python), "torch") == have
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert record["python"] == str(python)
    # A rerun repairs in place: the venv stays, pip finds everything satisfied.
    assert run_install(clone, home, *args).returncode == 0
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert not venv_dir.exists()
    assert snapshot(home) == before
