"""The plugin's remote engine settings with a TLS fingerprint (EngineManager, no Krita needed): the right
fingerprint connects, a wrong one is refused with a message before the token is sent, and a remote
engine started with --tls is not reached without one."""

import shutil

import pytest
from blended_diffusion import errors
from blended_diffusion.engine_manager import EngineManager, EngineSettings

from bridge import tls
from bridge.server import BridgeServer
from tests.bridge.helpers import TOKEN, FakeRunner

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory):
    cert, key, _ = tls.make_self_signed(str(tmp_path_factory.mktemp("tls")))
    runner = FakeRunner()
    server = BridgeServer(runner, TOKEN, "127.0.0.1", 0, handshake_timeout=2.0,
                          ssl_context=tls.server_context(cert, key))
    server.start()
    yield server, tls.certificate_fingerprint(cert)
    server.close()


def manager(server, fingerprint: str) -> EngineManager:
    return EngineManager(EngineSettings(mode="remote", host="127.0.0.1", port=server.port, token=TOKEN,
                                        fingerprint=fingerprint))


def test_remote_engine_with_the_right_fingerprint(tls_engine):
    server, fingerprint = tls_engine
    engine = manager(server, fingerprint.replace(":", ""))
    client = engine.connect()
    try:
        assert client.status()["connections"] >= 1
    finally:
        client.close()


def test_remote_engine_with_a_wrong_fingerprint_is_refused(tls_engine):
    server, fingerprint = tls_engine
    wrong = ("11" if fingerprint.startswith("00") else "00") + fingerprint[2:]
    with pytest.raises(errors.EngineStartError) as caught:
        manager(server, wrong).connect()
    text = str(caught.value)
    assert "remote engine at 127.0.0.1" in text and fingerprint in text
    assert "refusing to send the token" in text


def test_remote_tls_engine_without_a_fingerprint_says_so(tls_engine):
    server, _ = tls_engine
    with pytest.raises(errors.EngineStartError, match="only accepts TLS"):
        manager(server, "").connect()
