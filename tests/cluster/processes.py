"""Processes of the cluster tests: Ray's daemons on this machine (a run must leave none behind), a session's
processes, and waiting for a condition (standard library only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Set


def ray_daemon_pids() -> Set[int]:
    """Pids of Ray's daemons (gcs_server, raylet) in this network namespace's view of the machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"gcs_server" in command or b"raylet" in command:
                found.add(int(entry.name))
    return found


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def session_processes(sid: int, name: bytes) -> List[int]:
    """Pids of the processes of session ``sid`` whose command line holds ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[3]) == sid and name in command:
                found.append(int(entry.name))
    return found
