"""Run the real Krita GUI under Xvfb for the GUI scripts, with a watchdog that takes gdb stacks on a hang.

Standard library only. Used by scripts/krita_screenshot.py and scripts/krita_gui_stress.py:

* :func:`install_profile` makes a throw-away Krita profile (HOME) with the plugin, its bridge, the action
  file and a one-off driver plugin (Python source run inside Krita).
* :func:`run_krita` starts Xvfb (a free display), optionally the openbox window manager, then Krita; the
  driver writes a heartbeat file from a QTimer on Krita's GUI thread. When the heartbeat stops for
  ``stall`` seconds the GUI thread is stuck: gdb records the stacks of all of Krita's threads, then
  everything started here is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]

# Prepended to every driver: the heartbeat the watchdog watches, and a trace of the driver's steps.
DRIVER_PRELUDE = r"""
import json, os, time
from blended_diffusion.qt import QTimer

GUI = json.loads(os.environ["BD_GUI"])


def trace(text):
    with open(GUI["trace"], "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {text}\n")


def report(**fields):
    with open(GUI["status"], "w", encoding="utf-8") as handle:
        json.dump(fields, handle)


def _beat():
    with open(GUI["heartbeat"], "w") as handle:
        handle.write(str(time.time()))


_heartbeat = QTimer()
_heartbeat.timeout.connect(_beat)
_heartbeat.start(250)

import sys, traceback  # noqa: E401


def _log_exception(kind, value, tb):
    # Krita's own hook shows a modal dialog, which would stall the driver without a trace.
    GUI.setdefault("exceptions", []).append(1)
    trace("EXCEPTION " + "".join(traceback.format_exception(kind, value, tb)))


sys.excepthook = _log_exception

import faulthandler, signal  # noqa: E401 - `kill -USR1 <krita>` writes every thread's Python stack
_stacks = open(GUI["trace"] + ".py-stacks", "w")
faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True)


def soft_ellipse(w, h, cx, cy, rx, ry):
    out = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            r = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) ** 0.5
            out[y * w + x] = 255 if r <= 0.7 else (0 if r >= 1.0 else int(255 * (1.0 - r) / 0.3))
    return bytes(out)


def main_window():
    from krita import Krita

    return Krita.instance().activeWindow().qwindow()


def find_docker():
    from blended_diffusion.qt import QDockWidget

    dock = main_window().findChild(QDockWidget, "blended_diffusion_docker")
    if dock is None:
        raise RuntimeError("the Blended Diffusion docker is not registered")
    return dock


def arrange_window(width=1600, height=1000):
    # Window and dockers are arranged in their own step, before any document is open: changing the
    # canvas size in the same step as an image update can deadlock Krita 5.1 (docs/troubleshooting.md).
    from blended_diffusion.qt import QDockWidget

    win = main_window()
    win.move(0, 0)
    win.resize(width, height)
    dock = find_docker()
    for other in win.findChildren(QDockWidget):
        if other.objectName() not in ("KisLayerBox", "blended_diffusion_docker"):
            other.hide()  # room for the candidates list
    dock.show()
    dock.raise_()


def when_idle(doc, then, settle_ms=1000, limit_s=60.0, _start=None):
    # Polled from a timer (no nested event loop): the image has no pending updates, then a pause for the
    # status bar's progress to finish.
    start = time.time() if _start is None else _start
    if doc.tryBarrierLock():
        doc.unlock()
        QTimer.singleShot(settle_ms, then)
    elif time.time() - start > limit_s:
        trace("image never became idle")
        QTimer.singleShot(settle_ms, then)
    else:
        QTimer.singleShot(50, lambda: when_idle(doc, then, settle_ms, limit_s, start))


def button(widget, text):
    from blended_diffusion.qt import QPushButton

    for candidate in widget.findChildren(QPushButton):
        if candidate.text() == text:
            return candidate
    raise RuntimeError(f"no button {text!r}")
"""


def install_profile(home: Path, driver_source: str, driver_name: str = "bd_gui_driver") -> None:
    """Krita's per-user folders under ``home`` with the plugin enabled and ``driver_source`` as a plugin.

    The plugin files are copied as install.py lays them out (plugin package, bridge package, .desktop and
    .action files)."""
    resources = home / ".local" / "share" / "krita"
    pykrita = resources / "pykrita"
    pykrita.mkdir(parents=True)
    shutil.copy(ROOT / "krita_plugin" / "blended_diffusion.desktop", pykrita)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "krita_plugin" / "blended_diffusion", pykrita / "blended_diffusion", ignore=ignore)
    shutil.copytree(ROOT / "bridge", pykrita / "bridge", ignore=ignore)
    (resources / "actions").mkdir()
    shutil.copy(ROOT / "krita_plugin" / "blended_diffusion.action", resources / "actions")
    (pykrita / driver_name).mkdir()
    (pykrita / driver_name / "__init__.py").write_text(DRIVER_PRELUDE + driver_source)
    (pykrita / f"{driver_name}.desktop").write_text(
        f"[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library={driver_name}\n"
        f"X-Python-2-Compatible=false\nName=GUI driver\n"
    )
    config = home / ".config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "kritarc").write_text(
        f"[python]\nenable_blended_diffusion=true\nenable_{driver_name}=true\n\n"
        "[General]\nshowWelcomeScreen=false\n"
    )


def krita_env(home: Path, engine_config: Path, gui: Dict[str, object]) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        BLENDED_DIFFUSION_CONFIG=str(engine_config),
        BD_GUI=json.dumps(gui),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("QT_QPA_PLATFORM", None)
    # Private runtime and temp folders: Krita's single-instance socket lives there, and a Krita that finds
    # another instance's socket hands over to it instead of starting.
    runtime = home.parent / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(XDG_RUNTIME_DIR=str(runtime), TMPDIR=str(runtime))
    # Krita's embedded Python must find Debian's python3 (with PyQt5), not a pyenv or venv one first.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if "pyenv" not in p and ".venv" not in p
    )
    for name in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


@dataclass
class KritaRun:
    rc: Optional[int]
    hung: bool
    timed_out: bool
    wall: float
    output: str
    stacks: str = ""
    krita_pid: Optional[int] = None
    engine_pids: List[int] = field(default_factory=list)


def _start_xvfb(size: str) -> tuple[subprocess.Popen, str]:
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        xvfb.kill()
        raise RuntimeError("Xvfb did not start")
    return xvfb, f":{number}"


def gdb_stacks(pid: int, timeout: float = 120.0) -> str:
    """Backtraces of every thread of ``pid`` (gdb attaches, prints, detaches)."""
    if shutil.which("gdb") is None:
        return "(gdb is not installed: apt-get install gdb)"
    try:
        proc = subprocess.run(
            [
                "gdb",
                "-p",
                str(pid),
                "-batch",
                "-nx",
                "-ex",
                "set pagination off",
                "-ex",
                "thread apply all bt",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc.stdout + proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        return "(gdb timed out)"


def _children(pid: int) -> List[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_krita(*args: object, **kwargs: object) -> KritaRun:
    """:func:`run_krita_once`, started again (up to 3 times) when Krita could not open the X display.

    Other programs on a shared machine can take the display number Xvfb reported a moment later."""
    for _attempt in range(3):
        run = run_krita_once(*args, **kwargs)  # type: ignore[arg-type]
        if not (run.rc is not None and run.wall < 15 and "could not connect to display" in run.output):
            break
    return run


def run_krita_once(
    env: Dict[str, str],
    heartbeat: Path,
    timeout: float,
    stall: float = 45.0,
    window_manager: bool = True,
    size: str = "1600x1000",
    start_grace: float = 120.0,
    root: Optional[str] = None,
) -> KritaRun:
    """Krita under a fresh Xvfb (and openbox); returns when Krita exits, hangs or runs out of time.

    ``root``: the Krita of a Debian root (tests/krita_roots.py: krita6, krita53) instead of this machine's,
    seeing the X socket, the profile and this checkout at their own paths."""
    # A SIGTERM to this script still ends Krita, openbox and Xvfb (through the finally below).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    xvfb, display = _start_xvfb(size)
    started = time.time()
    wm = None
    env = dict(env, DISPLAY=display)
    log_path = heartbeat.with_suffix(".krita.log")
    try:
        if window_manager:
            wm = subprocess.Popen(
                ["openbox"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        command, krita_environment = ["krita", "--nosplash"], env
        if root is not None:
            from tests.krita_roots import KNOWN, chroot_command, root_environment

            cwd = Path(env.get("HOME", "/tmp"))
            command = chroot_command(KNOWN[root], command, root_environment(env), cwd)  # exec's all the way
            krita_environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        with open(log_path, "wb") as log:
            krita = subprocess.Popen(
                command,
                env=krita_environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            hung = timed_out = False
            stacks = ""
            engines: List[int] = []
            while krita.poll() is None:
                time.sleep(1.0)
                engines = sorted(set(engines) | set(_children(krita.pid)))
                now = time.time()
                beat = heartbeat.stat().st_mtime if heartbeat.exists() else None
                if (beat is None and now - started > start_grace) or (beat and now - beat > stall):
                    hung = True
                elif now - started > timeout:
                    timed_out = True
                if hung or timed_out:
                    stacks = gdb_stacks(krita.pid)
                    krita.kill()
                    break
            try:
                rc = krita.wait(timeout=30)
            except subprocess.TimeoutExpired:
                rc = None
        # The engine is Krita's child; after a kill nobody stops it but us.
        for pid in engines:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return KritaRun(
            rc,
            hung,
            timed_out,
            time.time() - started,
            log_path.read_text(errors="replace")[-6000:],
            stacks,
            krita.pid,
            engines,
        )
    finally:
        for proc in (wm, xvfb):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
