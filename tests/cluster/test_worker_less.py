"""A cluster with no worker, without Ray's daemons: the real bridge server and client in front of the
cluster's admission and queue on an empty pool. The error keeps its code once and its message as written,
whether the admission or the queue refuses the job."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest

from bridge import errors
from bridge.client import EngineClient
from bridge.jobqueue import JobRunner
from bridge.server import BridgeServer
from engine.cluster.scheduler import NO_WORKER, ClusterQueue, WorkerPool
from engine.cluster.service import AdmitOnWorker
from tests.bridge.helpers import TOKEN, make_png

IMAGE, MASK = make_png(16, 16, 3), make_png(16, 16, 1, 255)


class Admitted(JobRunner):
    """Validation that lets every job through to the queue."""


class AdmittedOnWorker(AdmitOnWorker, JobRunner):
    """The cluster runners' admission (asked of a worker) and nothing else of their validation."""

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        return self._admit(params, 16 * 16)


def serve(runner: JobRunner) -> Iterator[BridgeServer]:
    pool = WorkerPool(make_actor=lambda: None)  # no worker, and none can be made
    server = BridgeServer({"edit": runner}, TOKEN)
    server.jobs = ClusterQueue(pool, replace=False)
    runner.pool = pool  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["admission", "queue"])
def worker_less(request: pytest.FixtureRequest) -> Iterator[Any]:
    runner = AdmittedOnWorker() if request.param == "admission" else Admitted()
    expected = "no cluster worker is up to take the job" if request.param == "admission" else NO_WORKER
    for server in serve(runner):
        yield server, expected


def test_a_worker_less_cluster_says_its_code_once(worker_less: Any) -> None:
    server, expected = worker_less
    with EngineClient("127.0.0.1", server.port, TOKEN, timeout=30.0) as client:
        with pytest.raises(errors.EngineJobError) as failure:
            client.edit({"prompt": "a red ball"}, IMAGE, MASK)
        assert client.ping()  # the connection serves on
    assert (failure.value.code, failure.value.message) == (errors.ENGINE_ERROR, expected)
    assert str(failure.value) == f"engine_error: {expected}"
