"""installer.cli and install.py: the options, the checks before anything is written, the entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from installer import cli
from tests.installer.helpers import REPO, make_home, run_install, snapshot


def test_options_that_do_not_go_together_are_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.parse_args(["--python", sys.executable, "--venv", "/tmp/v"])
    assert stopped.value.code == 2 and "do not go with --venv/--reuse-python" in capsys.readouterr().err
    assert cli.parse_args(["--no-venv"]).python == sys.executable
    args = cli.parse_args([])
    assert (args.torch, args.models, args.python, args.yes) == ("auto", "default", None, False)


def test_install_py_help_names_the_command_and_its_options():
    result = subprocess.run(
        [sys.executable, str(REPO / "install.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: install.py ")
    assert "Install Blended Diffusion for Krita: ``python3 install.py``" in result.stdout
    for option in ("--krita-dir", "--torch-index", "--first-edit-args", "--uninstall", "--zip", "--cluster"):
        assert option in result.stdout


@pytest.mark.parametrize("bad", [["--python", "/no/such/python"], ["--krita-dir", "FILE"], ["--models", ""]])
def test_bad_input_changes_nothing(clone, tmp_path, bad):
    home = make_home(tmp_path)
    bad = [str(home / ".bashrc") if arg == "FILE" else arg for arg in bad]
    before = snapshot(home)
    result = run_install(clone, home, *bad, "--no-weights", "--no-first-edit", "--yes")
    assert result.returncode == 2
    assert "install.py: error:" in result.stderr and bad[0] in result.stderr
    assert snapshot(home) == before


def test_install_py_is_a_thin_entry_and_each_step_stays_small():
    """install.py only starts installer.cli; each step is a module of its own of at most 400 lines."""
    lengths = {path.name: len(path.read_text().splitlines()) for path in (REPO / "installer").glob("*.py")}
    assert {"layout.py", "kritarc.py", "manifest.py", "environment.py", "weights.py", "cli.py"} <= set(
        lengths
    )
    assert max(lengths.values()) <= 400, lengths
    assert len((REPO / "install.py").read_text().splitlines()) < 200
