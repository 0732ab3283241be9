"""TLS to a remote engine on loopback: the pinned certificate fingerprint is checked before the token is
sent, a wrong one is refused, plain and TLS peers that do not match get clear errors, and the token never
crosses the wire in clear (a recording relay sits between client and server)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from bridge import errors, tls
from bridge.client import EngineClient
from bridge.server import BridgeServer
from tests.bridge.helpers import TOKEN, FakeRunner, make_png

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Tuple[str, str, str]:
    cert, key, made = tls.make_self_signed(str(tmp_path_factory.mktemp("tls")))
    assert made
    return cert, key, tls.certificate_fingerprint(cert)


@pytest.fixture
def tls_server(certificate) -> Iterator[Tuple[BridgeServer, FakeRunner]]:
    cert, key, _ = certificate
    runner = FakeRunner()
    server = BridgeServer(runner, TOKEN, "127.0.0.1", 0, handshake_timeout=2.0,
                          ssl_context=tls.server_context(cert, key))
    server.start()
    try:
        yield server, runner
    finally:
        runner.hold.set()
        server.close()


def other_fingerprint(fingerprint: str) -> str:
    first = "00" if not fingerprint.startswith("00") else "11"
    return first + fingerprint[2:]


class Relay:
    """Forwards one TCP connection to ``port`` and records every byte the client sent."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = port
        self.client_bytes = bytearray()
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    self.client_bytes += data
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)


def test_right_fingerprint_connects_and_runs_a_job(tls_server, certificate):
    server, runner = tls_server
    fingerprint = certificate[2]
    relay = Relay(server.port)
    client = EngineClient("127.0.0.1", relay.port, TOKEN, timeout=10, fingerprint=fingerprint.lower())
    try:
        assert client.status()["connections"] == 1
        steps: List[int] = []
        image = make_png(8, 8)
        result = client.edit({"steps": 4}, image, make_png(8, 8, 1, 255),
                             on_progress=lambda info, preview: steps.append(info.get("step", 0)))
        assert result["candidates"] and max(steps) == 4
    finally:
        client.close()
    assert relay.client_bytes, "the relay saw the client's traffic"
    assert TOKEN.encode() not in bytes(relay.client_bytes), "the token crossed the wire in clear"
    assert b"hello" not in bytes(relay.client_bytes)


def test_wrong_fingerprint_is_refused_before_the_token_is_sent(certificate):
    cert, key, fingerprint = certificate
    context = tls.server_context(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:  # a TLS server that records everything the client sends after the handshake
        sock, _ = listener.accept()
        try:
            conn = context.wrap_socket(sock, server_side=True)
            conn.settimeout(5)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                received.extend(data)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(errors.EngineTLSError) as caught:
        EngineClient("127.0.0.1", listener.getsockname()[1], TOKEN, timeout=5,
                     fingerprint=other_fingerprint(fingerprint))
    thread.join(10)
    assert caught.value.code == errors.TLS_FINGERPRINT
    assert fingerprint in caught.value.message and "refusing to send the token" in caught.value.message
    assert bytes(received) == b"", "nothing may be sent to a server whose certificate does not match"


def test_plain_client_against_a_tls_engine_gets_a_clear_error(tls_server):
    server, _ = tls_server
    with pytest.raises(errors.EngineTLSError) as caught:
        EngineClient("127.0.0.1", server.port, TOKEN, timeout=5)
    assert caught.value.code == errors.TLS_REQUIRED
    assert "only accepts TLS" in caught.value.message and "fingerprint" in caught.value.message


def test_tls_client_against_a_plain_engine_gets_a_clear_error(fake_server, certificate):
    server, _ = fake_server
    with pytest.raises(errors.EngineTLSError) as caught:
        EngineClient("127.0.0.1", server.port, TOKEN, timeout=5, fingerprint=certificate[2])
    assert "--tls" in caught.value.message


def test_malformed_fingerprint_is_named(tls_server):
    server, _ = tls_server
    with pytest.raises(errors.EngineTLSError) as caught:
        EngineClient("127.0.0.1", server.port, TOKEN, timeout=5, fingerprint="AB:CD")
    assert "not a SHA-256 fingerprint" in caught.value.message


def test_fingerprint_forms():
    canonical = tls.fingerprint(b"certificate")
    plain = canonical.replace(":", "").lower()
    assert tls.normalize_fingerprint(plain) == canonical
    assert tls.normalize_fingerprint(f"SHA256 Fingerprint={canonical}") == canonical
    for bad in ("", "xyz", plain[:-2], plain + "00", plain[:-1] + "g"):
        with pytest.raises(ValueError):
            tls.normalize_fingerprint(bad)


def test_certificate_is_made_once_then_reused_with_a_private_key(tmp_path):
    cert, key, made = tls.make_self_signed(str(tmp_path))
    again = tls.make_self_signed(str(tmp_path))
    assert made and again == (cert, key, False)
    assert stat.S_IMODE(os.stat(key).st_mode) & 0o077 == 0, "the key is readable by its owner only"
    assert sorted(os.listdir(tmp_path)) == [tls.CERT_NAME, tls.KEY_NAME]


def test_serve_tls_prints_the_fingerprint_of_the_certificate_it_made_or_reused(tmp_path):
    env = dict(os.environ, BLENDED_DIFFUSION_TOKEN="t" * 32, PYTHONPATH=str(ROOT))
    prints = []
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--tls", "--tls-dir", str(tmp_path), "--models", "tiny",
             "--log-file", str(tmp_path / "serve.log")],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            line = ""
            while "fingerprint" not in line:  # printed before the (slow) model loading
                line = process.stderr.readline()
                assert line, "the engine ended without printing the fingerprint"
        finally:
            process.kill()
            process.communicate(timeout=30)
        prints.append(line.strip().rsplit(" ", 1)[-1])
    assert prints[0] == prints[1] == tls.certificate_fingerprint(str(tmp_path / tls.CERT_NAME))
