"""Ray's daemons on this machine, for tests that check a run leaves none behind (standard library only)."""

from __future__ import annotations

from pathlib import Path
from typing import Set


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
