"""TLS for a remote engine, with the server's certificate pinned by its SHA-256 fingerprint.

The engine makes (or reuses) a self-signed certificate (``python -m engine serve --tls``) and prints its
fingerprint; the user copies it into the plugin's remote settings. The client checks the fingerprint of
the certificate the server presents right after the TLS handshake and closes the connection on a
mismatch, before anything (the token above all) is sent. No certificate authority is involved, so the
client does not verify names or chains: the pinned fingerprint is the whole trust decision.

Standard library only (``ssl``, ``hashlib``); making a certificate runs the ``openssl`` command, because
``ssl`` cannot generate keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import ssl
import string
import subprocess
from pathlib import Path
from typing import Optional, Tuple

from bridge import errors

TLS_RECORD_HANDSHAKE = 0x16  # first byte of a TLS ClientHello: a plain client sends something else
CERT_NAME = "engine-cert.pem"
KEY_NAME = "engine-key.pem"


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as ``AB:CD:…`` (the form ``openssl x509 -fingerprint -sha256`` prints)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as typed (colons, spaces, any case, or openssl's ``SHA256 Fingerprint=…`` line) in
    canonical form; ValueError saying what is wrong otherwise."""
    cleaned = text.strip().rsplit("=", 1)[-1]
    hex_digits = "".join(c for c in cleaned if c not in ": \t").upper()
    if len(hex_digits) != 64 or any(c not in string.hexdigits for c in hex_digits):
        raise ValueError(
            f"not a SHA-256 fingerprint: {text!r} (expected 64 hexadecimal digits, as printed by "
            "'python -m engine serve --tls')"
        )
    return ":".join(hex_digits[i : i + 2] for i in range(0, 64, 2))


def certificate_fingerprint(cert_file: str) -> str:
    pem = Path(cert_file).read_text(encoding="ascii")
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


# ------------------------------------------------------------------------------------------ client


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The pinned fingerprint replaces name and chain checks (a self-signed certificate has no chain).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wrap_client(sock: socket.socket, host: str, port: int, expected: str) -> ssl.SSLSocket:
    """TLS over ``sock``; raises EngineTLSError (and closes the socket) unless the server's certificate
    has the ``expected`` SHA-256 fingerprint. Nothing is sent over the connection before this check."""
    want = normalize_fingerprint(expected)
    try:
        tls = client_context().wrap_socket(sock)
    except ssl.SSLError as exc:
        sock.close()
        raise errors.EngineTLSError(
            f"TLS handshake with the engine at {host}:{port} failed ({exc.reason or exc}): is it started "
            "with --tls? An engine without TLS cannot be used with a fingerprint set."
        ) from None
    except OSError as exc:
        sock.close()
        raise errors.EngineTLSError(
            f"the engine at {host}:{port} closed the connection during the TLS handshake ({exc}): is it "
            "started with --tls?"
        ) from None
    der = tls.getpeercert(binary_form=True) or b""
    got = fingerprint(der) if der else "(no certificate)"
    if not hmac.compare_digest(got, want):
        tls.close()
        raise errors.EngineTLSError(
            f"the engine at {host}:{port} presented a certificate with SHA-256 fingerprint {got}, not the "
            f"{want} set in the plugin: refusing to send the token (someone may be in between; if the "
            "engine made a new certificate, copy the fingerprint it prints at start)",
            errors.TLS_FINGERPRINT,
        )
    return tls


# ------------------------------------------------------------------------------------------ server


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def looks_like_tls(sock: socket.socket, timeout: float) -> Optional[bool]:
    """Peek at the client's first byte: True for a TLS ClientHello, False for anything else, None when
    the client sent nothing in ``timeout`` seconds or went away."""
    sock.settimeout(timeout)
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except (socket.timeout, OSError):
        return None
    finally:
        sock.settimeout(None)
    if not first:
        return None
    return first[0] == TLS_RECORD_HANDSHAKE


def make_self_signed(folder: str, common_name: str = "blended-diffusion-engine") -> Tuple[str, str, bool]:
    """(certificate, key, made): the certificate and key in ``folder``, made with ``openssl`` (an EC
    P-256 key, ten years) when they do not both exist yet. The key is readable by its owner only."""
    target = Path(folder)
    cert, key = target / CERT_NAME, target / KEY_NAME
    if cert.is_file() and key.is_file():
        return str(cert), str(key), False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError(
            "making a self-signed certificate needs the 'openssl' command (not found on PATH); install "
            "OpenSSL, or pass your own certificate and key with --tls-cert and --tls-key"
        )
    target.mkdir(parents=True, exist_ok=True)
    tmp_cert, tmp_key = target / (CERT_NAME + ".tmp"), target / (KEY_NAME + ".tmp")
    old_umask = os.umask(0o077)
    try:
        proc = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "3650", "-subj", f"/CN={common_name}",
             "-keyout", str(tmp_key), "-out", str(tmp_cert)],
            capture_output=True, text=True,
        )
    finally:
        os.umask(old_umask)
    if proc.returncode != 0 or not tmp_cert.is_file() or not tmp_key.is_file():
        for path in (tmp_cert, tmp_key):
            path.unlink(missing_ok=True)
        raise RuntimeError(f"openssl could not make the certificate: {proc.stderr.strip()[-500:]}")
    os.replace(tmp_key, key)  # key first: a certificate without its key is never left alone
    os.replace(tmp_cert, cert)
    return str(cert), str(key), True


class SerialTLSSocket:
    """A server connection's TLS socket with one owner at a time: OpenSSL does not allow two threads to use
    one SSL object at once, and a connection reads requests on one thread while its sender writes replies
    on another. Every call into the SSL object (read, write, shutdown, close) holds one lock; the socket
    is non-blocking, so a call never waits while holding it: on WANT_READ / WANT_WRITE the lock is let go
    and the thread waits for the socket (a selector per direction), then tries again with the same data
    (as OpenSSL requires of a repeated write).

    Offers what the bridge's reader and sender use: ``settimeout`` (of reads; writes wait until the peer
    reads or the socket is shut down), ``recv_into``, ``recv``, ``sendall``, ``shutdown``, ``close``.
    """

    MAX_WRITE = 256 << 10  # bytes per write call: a retry after WANT_WRITE repeats exactly this chunk

    def __init__(self, sock: ssl.SSLSocket) -> None:
        import selectors
        import threading

        self._sock = sock
        self._lock = threading.Lock()
        self._timeout: Optional[float] = sock.gettimeout()
        sock.setblocking(False)
        self._selectors = {}
        for kind, event in (("read", selectors.EVENT_READ), ("write", selectors.EVENT_WRITE)):
            selector = selectors.DefaultSelector()
            selector.register(sock.fileno(), event)
            self._selectors[kind] = selector

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, timeout: Optional[float]) -> None:
        self._timeout = timeout

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def _wait(self, want: str, deadline: Optional[float]) -> None:
        import time

        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        try:
            ready = self._selectors[want].select(remaining)
        except (OSError, ValueError, KeyError) as exc:  # closed under us
            raise OSError(f"socket closed: {exc}") from None
        if not ready and deadline is not None:
            raise socket.timeout("timed out")

    def recv_into(self, buffer, nbytes: int = 0) -> int:  # noqa: ANN001 - any writable buffer
        import time

        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._lock:
                try:
                    return self._sock.recv_into(buffer, nbytes)
                except ssl.SSLWantReadError:
                    want = "read"
                except ssl.SSLWantWriteError:
                    want = "write"
            self._wait(want, deadline)

    def recv(self, size: int) -> bytes:
        buffer = bytearray(size)
        return bytes(buffer[: self.recv_into(buffer)])

    def sendall(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        while view:
            chunk = view[: self.MAX_WRITE]
            with self._lock:
                try:
                    view = view[self._sock.send(chunk) :]
                    continue
                except ssl.SSLWantWriteError:
                    want = "write"
                except ssl.SSLWantReadError:
                    want = "read"
            self._wait(want, None)

    def shutdown(self, how: int) -> None:
        # the TCP socket's shutdown: ssl.SSLSocket.shutdown would also drop the SSL object under a reader
        with self._lock:
            socket.socket.shutdown(self._sock, how)

    def close(self) -> None:
        with self._lock:
            for selector in self._selectors.values():
                selector.close()
            self._sock.close()
