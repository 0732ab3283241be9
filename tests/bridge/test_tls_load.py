"""A short run of scripts/tls_load.py: three TLS clients, each with a job streaming previews while it sends a
storm of cancels, pings and status requests on the same connection (read and written by two threads on both
ends); every frame parses, every preview and result has the runner's bytes, nothing hangs. The long run
(minutes) and its figures: docs/cluster.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_three_tls_clients_with_progress_and_a_cancel_storm() -> None:
    spec = importlib.util.spec_from_file_location("tls_load", ROOT / "scripts" / "tls_load.py")
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    report = load.run_load(seconds=4.0, clients=3, hang_seconds=20.0)
    assert report["problems"] == []
    assert report["jobs_done"] + report["jobs_cancelled"] >= 3
    assert report["jobs_cancelled"] >= 1 and report["previews_checked"] > 100
    assert report["pongs"] > 100
