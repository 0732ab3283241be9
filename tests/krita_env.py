"""Environment for starting the real Krita from the tests.

Krita embeds the system Python and finds that Python's prefix through the first ``python3`` on PATH. When
the tests run under another Python of the same version first on PATH (pyenv, conda, a venv's activation),
Krita's embedded Python takes that prefix, misses Debian's dist-packages and fails with
"No module named 'PyQt5'". Putting Krita's own folder first on PATH keeps its Python the system's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping


def krita_environment(base: Mapping[str, str], executable: str = "krita") -> Dict[str, str]:
    env = dict(base)
    found = shutil.which(executable, path=env.get("PATH"))
    if found:
        krita_dir = os.path.dirname(os.path.realpath(found))
        env["PATH"] = os.pathsep.join([krita_dir, env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "tests" / "krita"
KRITARUNNER = shutil.which("kritarunner")


def write_engine_config(path: Path, models: str) -> None:
    """The plugin's engine.json: this checkout's engine, run by the test's Python on ``models``."""
    record = {"python": sys.executable, "engine_root": str(ROOT), "models": models, "weights_dir": None}
    path.write_text(json.dumps(record))


def scenario_environment(home: Path, models: str, **extra: str) -> Dict[str, str]:
    """kritarunner's environment in a throw-away ``home`` (settings, engine.json, logs all under it), with
    the scenario scripts, the repository and the plugin package importable; ``extra`` is added last."""
    config = home / "engine.json"
    write_engine_config(config, models)
    env = krita_environment(os.environ, "kritarunner")
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=os.pathsep.join([str(SCENARIOS), str(ROOT), str(ROOT / "krita_plugin")]),
        BLENDED_DIFFUSION_CONFIG=str(config),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def run_scenarios(env: Mapping[str, str], home: Path, script: str, out: Path, *args: str, timeout: int = 400):
    """Run tests/krita/<script>.py under kritarunner (``out`` and ``args`` are its arguments) and return the
    JSON it wrote; the test fails with Krita's output when it wrote none."""
    import pytest

    proc = subprocess.run(
        [KRITARUNNER, "-s", script, str(out), *args],
        env=dict(env),
        cwd=str(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if not out.exists():
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        pytest.fail(f"kritarunner wrote no result (rc {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())
