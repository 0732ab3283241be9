"""The docker's "Check engine": one report of the engine the plugin uses (plain Python, no Qt, no Krita).

A running engine sends the report in its ``status`` reply (``doctor``, made by ``engine/diagnostics.py``);
a local engine that cannot start is asked directly with ``python -m engine doctor`` (the same report from
the command line), so the most common failure, missing weights, gets its full explanation.
"""

import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

from .config import load_engine_config

DOCTOR_TIMEOUT = 180.0  # seconds: it imports torch and may hash a few GB of weights


def status_report(status: Dict[str, Any]) -> str:
    """The report from a status reply; an engine too old to send one gets what its status says."""
    doctor = status.get("doctor")
    if isinstance(doctor, dict) and isinstance(doctor.get("text"), str):
        return doctor["text"]
    models = status.get("models") if isinstance(status.get("models"), dict) else {}
    versions = status.get("versions") if isinstance(status.get("versions"), dict) else {}
    lines = [
        "This engine sends no detailed report (update it); its status says:",
        f"Device: {status.get('device', '?')}",
        f"Preset: {models.get('preset', '?')}",
        "Versions: " + ", ".join(f"{name} {value}" for name, value in sorted(versions.items())),
    ]
    return "\n".join(lines)


def header(settings: Any, log_path: Optional[str]) -> List[str]:
    """What the plugin itself knows: which engine it talks to and where the local engine logs."""
    from . import __name__ as package

    lines = [f"Plugin: {package} in Krita's Python {sys.version.split()[0]}"]
    if getattr(settings, "mode", "local") == "remote":
        lines.append(f"Engine: remote at {settings.host}:{settings.port} (its log is on that machine)")
    else:
        lines.append(f"Engine: local (started by the plugin; its log: {log_path})")
    return lines


def doctor_command(settings: Any, log_path: Optional[str]) -> Dict[str, Any]:
    """The ``python -m engine doctor`` call for the local engine install.py recorded: argv, cwd, env."""
    config = load_engine_config(getattr(settings, "config_path", None))
    argv = [
        config.python,
        "-m",
        "engine",
        "doctor",
        "--models",
        getattr(settings, "models", "") or config.models,
    ]
    if getattr(settings, "device", ""):
        argv += ["--device", settings.device]
    if log_path:
        argv += ["--log-file", log_path]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (config.engine_root, env.get("PYTHONPATH")) if p)
    if config.weights_dir:
        env["BLENDED_DIFFUSION_WEIGHTS"] = config.weights_dir
    return {"argv": argv, "cwd": config.engine_root, "env": env}


def run_local_doctor(settings: Any, log_path: Optional[str], timeout: float = DOCTOR_TIMEOUT) -> str:
    """Run the local engine's doctor (on a worker thread: it takes seconds); its report, or why not."""
    try:
        call = doctor_command(settings, log_path)
    except Exception as exc:  # noqa: BLE001 - no engine.json: say so, the report is about exactly this
        return f"The engine is not installed or its configuration cannot be read: {exc}"
    creationflags = 0x08000000 if sys.platform == "win32" else 0  # CREATE_NO_WINDOW
    try:
        done = subprocess.run(
            call["argv"],
            cwd=call["cwd"],
            env=call["env"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            creationflags=creationflags,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Could not run the engine's doctor ({' '.join(call['argv'][:4])}…): {exc}"
    text = done.stdout.strip()
    if not text:
        text = "The engine's doctor printed nothing; its errors:\n" + done.stderr.strip()[-3000:]
    return text


def compose(
    settings: Any, log_path: Optional[str], status: Optional[Dict[str, Any]], problem: str = ""
) -> str:
    """The whole dialog text: the plugin's lines, the engine's problem if it failed, the engine's report."""
    lines = header(settings, log_path)
    if problem:
        lines += ["", f"The engine could not be reached: {problem}"]
    if status is not None:
        lines += ["", status_report(status)]
    return "\n".join(lines)
