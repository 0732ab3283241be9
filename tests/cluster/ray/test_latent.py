"""A latent job through Ray itself: the ``toy-latent`` preset served by ``serve --ray`` (2 workers on the
session's head, beside the shared tiny server) gives one engine's candidates byte for byte, split over both
workers, and a worker killed mid-job loses nothing."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Dict

import pytest

from tests.cluster.ray.edits import IMAGE, MASK, by_seed, client, cluster_status, wait_idle

# 3 candidates of one each, seeds 7, 8, 9: shards of whole batches on both workers
JOB = {"prompt": "a red circle", "seed": 7, "batch_size": 1, "iterations_num": 3}


@pytest.fixture
def two_workers(latent_server: Dict[str, Any]) -> Dict[str, Any]:
    return wait_idle(latent_server)


def test_a_latent_job_on_two_workers_gives_one_engines_bytes(
    two_workers: Dict[str, Any], latent_reference: Any
) -> None:
    with client(two_workers) as engine:
        models = engine.status()["models"]
        assert (models["preset"], models["method"]) == ("toy-latent", "latent")
        result = engine.edit(dict(JOB), IMAGE, MASK)
    assert "ran as 2 shards on 2 cluster workers" in result["notes"], result["notes"]
    expected = latent_reference(JOB)
    assert sorted(expected) == [7, 8, 9]
    assert by_seed(result) == expected


def test_a_latent_worker_killed_mid_job_loses_nothing(
    two_workers: Dict[str, Any], latent_reference: Any
) -> None:
    victim = cluster_status(two_workers)["worker_pids"][0]
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            os.kill(victim, signal.SIGKILL)
            killed.set()

    with client(two_workers) as engine:
        result = engine.edit(dict(JOB), IMAGE, MASK, on_progress=on_progress)
    assert killed.is_set()
    assert by_seed(result) == latent_reference(JOB)
    assert victim not in cluster_status(two_workers)["worker_pids"]
