"""``python -m engine serve`` refusals and warnings that happen before the models load (fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parents[2]


def serve(args: List[str], env_extra: Dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BLENDED_DIFFUSION_TOKEN"}
    env.update(env_extra, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_refuses_to_start_without_a_token_in_the_environment():
    for env in ({}, {"BLENDED_DIFFUSION_TOKEN": "short"}):
        process = serve(["--models", "tiny"], env)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2
        assert "BLENDED_DIFFUSION_TOKEN" in err and out == ""


def test_serve_rejects_an_invalid_port():
    process = serve(["--port", "70000"], {"BLENDED_DIFFUSION_TOKEN": "x" * 32})
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "--port" in err


def test_serve_warns_when_listening_beyond_loopback(tmp_path):
    process = serve(
        ["--host", "0.0.0.0", "--models", "tiny", "--log-file", str(tmp_path / "serve.log")],
        {"BLENDED_DIFFUSION_TOKEN": "x" * 32},
    )
    try:
        line = process.stderr.readline()  # the warning comes before the (slow) model loading
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert "WARNING" in line and "not loopback" in line and "0.0.0.0" in line
    assert "x" * 32 not in (tmp_path / "serve.log").read_text()
