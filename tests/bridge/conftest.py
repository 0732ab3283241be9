from __future__ import annotations

from typing import Iterator, Tuple

import pytest

from bridge.server import BridgeServer
from tests.bridge.helpers import TOKEN, FakeRunner


@pytest.fixture
def fake_server() -> Iterator[Tuple[BridgeServer, FakeRunner]]:
    """An in-process bridge server on loopback with a fake job runner."""
    runner = FakeRunner()
    server = BridgeServer(runner, TOKEN, "127.0.0.1", 0, handshake_timeout=2.0, versions={"engine": "test"})
    server.start()
    try:
        yield server, runner
    finally:
        runner.hold.set()
        server.close()


@pytest.fixture(autouse=True)
def _step_times_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edits record their step times (engine.editing.timing): into a temporary file, never the user's."""
    path = tmp_path_factory.mktemp("step-times") / "step_times.json"
    monkeypatch.setenv("BLENDED_DIFFUSION_STEP_TIMES", str(path))
