"""Environment for starting the real Krita from the tests.

Krita embeds the system Python and finds that Python's prefix through the first ``python3`` on PATH. When
the tests run under another Python of the same version first on PATH (pyenv, conda, a venv's activation),
Krita's embedded Python takes that prefix, misses Debian's dist-packages and fails with
"No module named 'PyQt5'". Putting Krita's own folder first on PATH keeps its Python the system's.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tests.krita_roots import (
    KRITA6,
    KRITA53,
    KritaRoot,
    build,
    cannot_build,
    chroot_command,
    root_environment,
)


def krita_environment(base: Mapping[str, str], executable: str = "krita") -> Dict[str, str]:
    env = dict(base)
    found = shutil.which(executable, path=env.get("PATH"))
    if found:
        krita_dir = os.path.dirname(os.path.realpath(found))
        env["PATH"] = os.pathsep.join([krita_dir, env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


ROOT = Path(__file__).resolve().parents[1]
KRITARUNNER = shutil.which("kritarunner")
RUNNER = "tests.krita.scenario_runner"  # the in-Krita module that runs a session's scenarios


def write_engine_config(path: Path, models: str) -> None:
    """The plugin's engine.json: this checkout's engine, run by the test's Python on ``models``."""
    record = {"python": sys.executable, "engine_root": str(ROOT), "models": models, "weights_dir": None}
    path.write_text(json.dumps(record))


def scenario_environment(home: Path, models: str, **extra: str) -> Dict[str, str]:
    """kritarunner's environment in a throw-away ``home`` (settings, engine.json, logs all under it), with
    the repository (the scenarios: ``tests.krita.*``) and the plugin package importable; ``extra`` is added
    last."""
    config = home / "engine.json"
    write_engine_config(config, models)
    env = krita_environment(os.environ, "kritarunner")
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "krita_plugin")]),
        BLENDED_DIFFUSION_CONFIG=str(config),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class KritaInstall:
    """One real Krita the tests run: this machine's own (Debian's 5.1) or one in a Debian root."""

    label: str  # the test id: krita5.1, krita6, krita5.3
    root: Optional[KritaRoot] = None  # None: this machine's Krita

    def command(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, keep: Sequence[str] = ()
    ) -> Tuple[List[str], Dict[str, str]]:
        """``argv`` (a bare program name first: kritarunner, krita) as this Krita runs it, with its
        environment; ``keep`` names variables set later by a wrapper (xvfb-run's DISPLAY) to pass through."""
        if self.root is None:
            program = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
            return [program, *argv[1:]], dict(env)
        outer = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR")}
        return chroot_command(self.root, argv, root_environment(env), cwd, keep), outer


HOST_KRITA = KritaInstall("krita5.1")
KRITAS = {
    "krita5.1": HOST_KRITA,
    "krita6": KritaInstall("krita6", KRITA6),
    "krita5.3": KritaInstall("krita5.3", KRITA53),
}


def ensure_krita(label: str) -> KritaInstall:
    """The Krita ``label``, its root built if needed; skips where it cannot run here and says why, except in
    CI, where a Krita that cannot be had fails the test."""
    import pytest

    krita = KRITAS[label]
    if krita.root is None:
        if KRITARUNNER is None:
            pytest.skip("kritarunner is not installed (apt-get install krita python3-pyqt5)")
        return krita
    why = cannot_build()
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{label}: {why}")
    log_path = krita.root.path.parent / f"{krita.root.name}-build.log"
    if not krita.root.ready():
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            try:
                build(krita.root, log)
            except Exception as exc:  # noqa: BLE001 - the test shows why the root could not be built
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"{label}: building {krita.root.path} failed: {exc}\n{tail}")
    return krita


# Krita's first start in a new HOME copies its resource bundles there and builds their database (80-90 MB):
# 15-50 s on this machine, where every later start in that HOME takes 2-3 s. So each Krita makes that
# folder once (kept in $BD_KRITA_RESOURCES per Krita binary, else for the test session) and every
# throw-away HOME gets a copy. A folder from another Krita is never used: the key is its binary's size and
# time, so an upgrade or a rebuilt root makes its own.
RESOURCE_CACHE = Path(os.environ.get("BD_KRITA_RESOURCES", "/var/cache/blended-diffusion/krita-resources"))
_RESOURCE_TEMPLATES: Dict[str, Optional[Path]] = {}


def seed_resources(krita: KritaInstall, home: Path, folder: str = "kritarunner") -> None:
    """Give ``home`` the resource folder ``krita``'s first start makes (``folder``: kritarunner's, or the
    GUI's ``krita``) unless it has one; where none could be made, Krita makes its own as before."""
    target = home / ".local" / "share" / folder
    if krita.label not in _RESOURCE_TEMPLATES:
        _RESOURCE_TEMPLATES[krita.label] = _resource_template(krita)
    template = _RESOURCE_TEMPLATES[krita.label]
    if template is not None and not (target / "resourcecache.sqlite").exists():
        shutil.copytree(template, target, symlinks=True, dirs_exist_ok=True)


def _krita_key(krita: KritaInstall) -> Optional[str]:
    binary = krita.root.path / "usr/bin/kritarunner" if krita.root else Path(KRITARUNNER or "/nonexistent")
    try:
        found = binary.resolve().stat()
    except OSError:
        return None
    return f"{krita.label}-{found.st_size}-{found.st_mtime_ns}"


def _resource_template(krita: KritaInstall) -> Optional[Path]:
    key = _krita_key(krita)
    kept = RESOURCE_CACHE / key if key else None
    if kept is not None and (kept / "resourcecache.sqlite").is_file():
        return kept
    home = Path(tempfile.mkdtemp(prefix=f"bd-{krita.label}-resources-", dir="/tmp"))
    atexit.register(shutil.rmtree, home, True)
    plan = home / "plan.json"  # the scenario runner with nothing to run: Krita starts, makes it, quits
    plan.write_text(json.dumps({"progress": str(home / "progress.json"), "scenarios": []}))
    env = scenario_environment(home, "tiny")
    cmd, run_env = krita.command(["kritarunner", "-s", RUNNER, str(plan)], env, home)
    subprocess.run(cmd, env=run_env, cwd=str(home), capture_output=True, timeout=300)
    made = home / ".local" / "share" / "kritarunner"
    if not (made / "resourcecache.sqlite").is_file():
        return None
    if kept is None:
        return made
    try:  # copied whole, then renamed: another run never sees half a folder; where it won, its copy stays
        RESOURCE_CACHE.mkdir(parents=True, exist_ok=True)
        for old in RESOURCE_CACHE.glob(f"{krita.label}-*"):
            if old != kept:
                shutil.rmtree(old, ignore_errors=True)  # an older Krita's
        staging = Path(tempfile.mkdtemp(dir=RESOURCE_CACHE, prefix=".staging-"))
        shutil.copytree(made, staging / "resources", symlinks=True)
        os.rename(staging / "resources", kept)
        shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        pass  # not writable here, or kept by another run meanwhile
    return kept if (kept / "resourcecache.sqlite").is_file() else made


def first_display() -> int:
    """Where ``xvfb-run -a`` starts looking for a free display: apart for each pytest-xdist worker, since two
    workers searching from the same number can pick the same one at once and one Krita finds no X server."""
    index = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    return 99 + 20 * (int(index) if index.isdigit() else 0)


def run_gui(krita: KritaInstall, env: Mapping[str, str], cwd: Path, log: Path, timeout: int = 300) -> None:
    """Krita's GUI under ``xvfb-run`` (the X server on this machine, its socket and cookie in /tmp, which a
    root shares) until it quits by itself; a Krita that hangs is killed with its Xvfb. The HOME gets the
    resources of Krita's first start (seed_resources), which the GUI reads as kritarunner does."""
    env = {k: v for k, v in env.items() if k != "QT_QPA_PLATFORM"}  # the GUI needs X, not offscreen
    if "HOME" in env:
        seed_resources(krita, Path(env["HOME"]), "krita")  # the GUI's folder; kritarunner's resources
    cmd, run_env = krita.command(["krita", "--nosplash"], env, cwd, keep=("DISPLAY", "XAUTHORITY"))
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            ["xvfb-run", "-a", "-n", str(first_display()), *cmd],
            env=run_env,
            cwd=str(cwd),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
