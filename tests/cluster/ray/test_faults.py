"""Faults on the fault tests' own ``serve --ray local`` server (its own head and 2 workers, never the shared
server's): a killed worker's shard reruns elsewhere with the same bytes, no worker left fails the job
clearly, the head killed fails jobs with "cluster unavailable" and the server reconnects.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from typing import Any, Dict

import pytest

from bridge import errors
from engine.cluster.scheduler import NO_WORKER
from tests.cluster.processes import session_processes, wait_for
from tests.cluster.ray.edits import EDIT, IMAGE, LONG, MASK, QUICK, by_seed, client, cluster_status, wait_idle


@pytest.fixture
def two_workers(fault_server: Dict[str, Any]) -> Dict[str, Any]:
    return wait_idle(fault_server)


def test_a_killed_worker_reruns_its_shard_elsewhere_with_the_same_bytes(
    two_workers: Dict[str, Any], reference: Any
) -> None:
    victim = cluster_status(two_workers)["worker_pids"][0]
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            os.kill(victim, signal.SIGKILL)
            killed.set()

    with client(two_workers) as engine:
        result = engine.edit(dict(EDIT), IMAGE, MASK, on_progress=on_progress)
    assert killed.is_set()
    assert by_seed(result) == reference(EDIT)
    assert victim not in cluster_status(two_workers)["worker_pids"]


def test_no_worker_left_fails_the_job_clearly_and_the_server_serves_on(two_workers: Dict[str, Any]) -> None:
    pids = cluster_status(two_workers)["worker_pids"]
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.set()

    with client(two_workers) as engine:
        with pytest.raises(errors.EngineJobError) as failure:
            engine.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress)
        # the code once, the message as the cluster wrote it (and no code in it)
        assert (failure.value.code, failure.value.message) == (errors.ENGINE_ERROR, NO_WORKER)
        assert str(failure.value) == f"engine_error: {NO_WORKER}"
        assert engine.ping()  # the same connection still answers
    # the pool starts replacements; once they are up, jobs run again
    wait_for(lambda: cluster_status(two_workers)["workers"] == 2, 240, "the replacement workers")
    with client(two_workers) as engine:
        result = engine.edit(dict(QUICK), IMAGE, MASK)
    assert len(result["candidates"]) == 4


def test_the_ray_head_gone_fails_jobs_clearly_and_the_server_reconnects(two_workers: Dict[str, Any]) -> None:
    """The head (its GCS) killed mid-job: the job ends with "cluster unavailable", the server keeps
    answering, starts a new local head (it started this one) and its workers, and jobs run again."""
    heads = session_processes(two_workers["pid"], b"gcs_server")
    assert len(heads) == 1
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            os.kill(heads[0], signal.SIGKILL)
            killed.set()

    with client(two_workers) as engine:
        with pytest.raises(errors.EngineJobError) as failure:
            engine.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress)
        assert failure.value.code == errors.ENGINE_ERROR
        assert failure.value.message.startswith("cluster unavailable: the Ray head at "), str(failure.value)
        assert engine.ping()

    def back() -> bool:
        cluster = cluster_status(two_workers)
        return cluster["unavailable"] is None and cluster["workers"] == 2

    wait_for(back, 240, "the cluster to come back")
    cluster = cluster_status(two_workers)
    assert all(ipaddress.ip_address(a).is_loopback for a in cluster["node_addresses"] + cluster["nodes"])
    with client(two_workers) as engine:
        result = engine.edit(dict(QUICK), IMAGE, MASK)
    assert len(result["candidates"]) == 4
