"""``serve --ray`` with bad input: one clear line, exit status 2, nothing started and left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.cluster.processes import ray_daemon_pids
from tests.cluster.ray.conftest import ROOT


def _serve(env: Dict[str, str], *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--models", "tiny", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (["--ray", "local", "--ray-workers", "0"], "error: --ray-workers must be at least 1, not 0"),
        (["--ray-workers", "2"], "error: --ray-workers needs --ray"),
        (["--ray", "127.0.0.1:9"], "error: --ray 127.0.0.1:9: nobody answers there"),
    ],
    ids=["zero-workers", "workers-without-ray", "nobody-answers"],
)
def test_bad_cluster_options(
    cluster_env: Dict[str, str], tmp_path: Path, options: List[str], message: str
) -> None:
    before = ray_daemon_pids()
    result = _serve(dict(cluster_env), *options, "--log-file", str(tmp_path / "log"))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no ready line
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert ray_daemon_pids() == before


def test_without_ray_installed(cluster_env: Dict[str, str], tmp_path: Path) -> None:
    """A ``ray`` that cannot be imported (as when it is not installed): the line says how to install it."""
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(cluster_env, PYTHONPATH=os.pathsep.join([str(fake.parent), str(ROOT)]))
    result = _serve(env, "--ray", "local", "--ray-workers", "1", "--log-file", str(tmp_path / "log"))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--ray needs Ray" in lines[0] and "install.py --cluster" in lines[0]
