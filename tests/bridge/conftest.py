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
