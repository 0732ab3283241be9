#!/usr/bin/env python3
"""The project's test command: ``python3 run_tests.py [pytest args]``.

Creates the engine environment in ``.venv`` from ``requirements/dev.txt`` when it is missing (or when the
requirement files changed since it was made), then runs the whole suite with pytest inside it.
Standard library only, so it runs on a fresh machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("BD_TEST_VENV", ROOT / ".venv"))
REQUIREMENTS = [ROOT / "requirements" / name for name in ("dev.txt", "engine.txt", "cluster.txt")]


def venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_digest() -> str:
    h = hashlib.sha256()
    for path in REQUIREMENTS:
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_environment() -> Path:
    python = venv_python(VENV)
    stamp = VENV / ".requirements-sha256"
    digest = requirements_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"run_tests: setting up the test environment in {VENV} (this happens once)", flush=True)
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS[0])], check=True)
    stamp.write_text(digest)
    return python


def worker_args(argv: list[str]) -> list[str]:
    """pytest-xdist workers, a file to each (its fixtures and real-Krita sessions stay together): most of the
    suite waits on Krita, Xvfb and engine subprocesses, so even two cores gain. The files go out in the
    order tests/conftest.py sorts them (the long ones first), not xdist's by test count.
    ``BD_TEST_WORKERS=0`` (or ``-n`` / ``-p no:xdist`` among the arguments) leaves it to the caller."""
    workers = int(os.environ.get("BD_TEST_WORKERS", min(os.cpu_count() or 1, 4)))
    chosen = "no:xdist" in argv or any(arg.startswith(("-n", "--numprocesses")) for arg in argv)
    if workers <= 1 or chosen:
        return []
    return ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]


def main(argv: list[str]) -> int:
    python = ensure_environment()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    command = [str(python), "-m", "pytest", *worker_args(argv), *(argv or ["tests"])]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
