"""The engine's side of the socket: connections, the handshake, and requests fed to the job queue.

Threads: one accepts connections, one per connection reads and answers requests (so ping/status answer even
while a job runs), one sender per connection writes its replies (so a client that stops reading never
blocks the job worker), and the queue's worker runs jobs one at a time (:mod:`bridge.jobqueue`).

Standard library only: the job runners (torch, the editing loop) are handed in by the engine
(``engine/jobs.py``, started by ``python -m engine serve``), so tests drive the server with fake runners.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import logging
import os
import queue
import socket
import ssl
import threading
import time
import traceback
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Set, Tuple, Union

from bridge import errors, tls
from bridge.jobqueue import Job, JobQueue, JobRunner, error_fields
from bridge.limits import DEFAULT_LIMITS, JobLimits
from bridge.protocol import PROTOCOL_VERSION, Limits, MessageReader, encode_message, png_info

TOKEN_ENV = "BLENDED_DIFFUSION_TOKEN"
MIN_TOKEN_LENGTH = 16

log = logging.getLogger("bridge.server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------ connections

_CLOSE = object()


class Connection:
    """One client: a reader (this object's thread) and a sender thread fed through an outbox."""

    MAX_OUTBOX_BYTES = 512 << 20  # a client that lets this much pile up is not reading: drop it
    DROP_PREVIEWS_ABOVE = 32 << 20

    def __init__(self, server: BridgeServer, sock: socket.socket, address: Any, conn_id: int) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.id = conn_id
        self._outbox: queue.Queue = queue.Queue()
        self._outbox_bytes = 0
        self._outbox_lock = threading.Lock()
        self._closed = False
        self._sender = threading.Thread(target=self._send_loop, name=f"send-{conn_id}", daemon=True)

    # --- sending (any thread)

    def send(
        self,
        msg_type: str,
        fields: Optional[Dict[str, Any]] = None,
        attachments: Sequence[Tuple[str, bytes]] = (),
        droppable: bool = False,
    ) -> bool:
        """Queue a message for this client; False when the connection is closed (the message is dropped)."""
        with self._outbox_lock:
            if self._closed:
                return False
            if droppable and self._outbox_bytes > self.DROP_PREVIEWS_ABOVE:
                attachments = ()  # keep the progress, skip the preview image
            parts = encode_message(msg_type, fields, attachments)
            size = sum(len(part) for part in parts)
            if self._outbox_bytes + size > self.MAX_OUTBOX_BYTES:
                log.warning("connection %d is not reading its replies; closing it", self.id)
                self._closed = True
                self._outbox.put(_CLOSE)
                try:
                    self.sock.shutdown(socket.SHUT_RD)  # ends the reader, which cancels this client's jobs
                except OSError:
                    pass
                return False
            self._outbox_bytes += size
            self._outbox.put((parts, size))
            return True

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is _CLOSE:
                break
            parts, size = item
            try:
                for part in parts:
                    self.sock.sendall(part)
            except OSError:
                with self._outbox_lock:
                    self._closed = True
                break
            finally:
                with self._outbox_lock:
                    self._outbox_bytes -= size
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # --- reading (this connection's thread)

    def _start_tls(self) -> bool:
        """Wrap the socket in TLS; on a plain client or a failed handshake, close it and return False.

        A plain client is told why in the bridge's own framing, which it can read, and its hello (with the
        token) is never read."""
        context = self.server.ssl_context
        kind = tls.looks_like_tls(self.sock, self.server.handshake_timeout)
        if kind is False:
            log.warning("connection %d from %s: plain connection to the TLS engine refused", self.id,
                        self.address)
            try:
                self.sock.settimeout(2.0)
                for part in encode_message("error", error_fields(
                    errors.TLS_REQUIRED,
                    "this engine only accepts TLS connections: set its certificate fingerprint (printed by "
                    "'python -m engine serve --tls') in the plugin's remote engine settings",
                )):
                    self.sock.sendall(part)
            except OSError:
                pass
        elif kind is True and context is not None:
            try:
                self.sock.settimeout(self.server.handshake_timeout)
                self.sock = context.wrap_socket(self.sock, server_side=True)
                self.sock.settimeout(None)
                # the reader and the sender share it: one owner at a time (OpenSSL needs that)
                self.sock = tls.SerialTLSSocket(self.sock)  # type: ignore[assignment]
                return True
            except (ssl.SSLError, OSError) as exc:
                log.info("connection %d from %s: TLS handshake failed: %s", self.id, self.address, exc)
        self._finish(drain=kind is False, started=False)
        return False

    def serve(self) -> None:
        if self.server.ssl_context is not None and not self._start_tls():
            return
        self._sender.start()
        fatal = False
        try:
            if self._handshake():
                self._loop()
            else:
                fatal = True
        except errors.ConnectionClosed:
            pass
        except errors.ProtocolError as exc:
            fatal = True
            log.info("connection %d: %s", self.id, exc.message)
            self.send("error", error_fields(exc.code, exc.message))
        except Exception:  # a bug here must not take the server down
            fatal = True
            log.error("connection %d failed:\n%s", self.id, traceback.format_exc())
            self.send("error", error_fields(errors.INTERNAL_ERROR, "internal error in the server"))
        finally:
            self._finish(drain=fatal)

    def _handshake(self) -> bool:
        reader = MessageReader(self.sock, self.server.limits.handshake())
        message = reader.read(timeout=self.server.handshake_timeout)
        if message is None:
            raise errors.ProtocolError(
                f"no hello within {self.server.handshake_timeout:.0f} s", errors.AUTH_FAILED
            )
        token = message.get("token")
        if message.type != "hello" or not isinstance(token, str) or not self.server.token_matches(token):
            log.warning("connection %d from %s: authentication failed", self.id, self.address)
            self.send(
                "error", error_fields(errors.AUTH_FAILED, "authentication failed: missing or wrong token")
            )
            return False
        version = message.get("protocol")
        if version != PROTOCOL_VERSION:
            self.send(
                "error",
                dict(
                    error_fields(
                        errors.PROTOCOL_VERSION,
                        f"the engine speaks bridge protocol {PROTOCOL_VERSION}, the client {version!r}: "
                        "update the plugin or the engine",
                    ),
                    protocol=PROTOCOL_VERSION,
                ),
            )
            return False
        self.send("welcome", {"protocol": PROTOCOL_VERSION, "connection": self.id, **self.server.versions()})
        return True

    def _loop(self) -> None:
        reader = MessageReader(self.sock, self.server.limits)
        while True:
            message = reader.read(timeout=None)
            if message is None:
                continue
            request_id = message.get("id")
            if request_id is not None and (
                isinstance(request_id, bool)
                or not isinstance(request_id, (int, str))
                or len(str(request_id)) > 64
            ):
                self.send(
                    "error", error_fields(errors.BAD_MESSAGE, "'id' must be a short string or an integer")
                )
                continue
            handler = self._handlers.get(message.type)
            if handler is None and message.type in self.server.runners:
                handler = Connection._on_job
            if handler is None:
                self.send(
                    "error",
                    error_fields(
                        errors.UNKNOWN_TYPE, f"unknown message type {message.type!r}", None, request_id
                    ),
                )
                continue
            if message.attachments and message.type not in self.server.runners:
                self.send(
                    "error",
                    error_fields(
                        errors.BAD_MESSAGE, f"{message.type} takes no attachments", None, request_id
                    ),
                )
                continue
            try:
                handler(self, message, request_id)
            except errors.JobFailed as exc:
                self.send("error", error_fields(exc.code, exc.message, None, request_id))

    def _on_ping(self, message: Any, request_id: Any) -> None:
        self.send("pong", {"re": request_id, "time": time.time()})

    def _on_status(self, message: Any, request_id: Any) -> None:
        self.send("status", dict(self.server.status(), re=request_id))

    def _on_job(self, message: Any, request_id: Any) -> None:
        kind = message.type
        runner = self.server.runners[kind]
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise errors.JobFailed(errors.INVALID_INPUT, f"'params' must be an object of {kind} parameters")
        png_level = message.get("png_level")
        if png_level is not None and (type(png_level) is not int or not 0 <= png_level <= 9):
            raise errors.JobFailed(errors.INVALID_INPUT, f"'png_level' must be 0..9, not {png_level!r}")
        images = self.server.check_images(message.attachments, runner, kind)
        params = runner.validate(params, images)
        job = Job(self.server.next_job_id(), self, params, images, kind, png_level)

        def accepted(position: int) -> None:
            self.send("accepted", {"re": request_id, "job": job.id, "position": position})

        self.server.jobs.submit(job, accepted)
        log.info("job %s queued at position %d (connection %d)", job.id, job.position, self.id)

    def _on_cancel(self, message: Any, request_id: Any) -> None:
        job_id = message.get("job")
        if not isinstance(job_id, str):
            raise errors.JobFailed(errors.BAD_MESSAGE, "cancel needs the 'job' id string")
        state = self.server.jobs.cancel(job_id, self)
        if state is None:
            raise errors.JobFailed(
                errors.UNKNOWN_JOB, f"no queued or running job {job_id!r} on this connection"
            )
        self.send("cancelling", {"re": request_id, "job": job_id, "state": state})

    def _on_hello(self, message: Any, request_id: Any) -> None:
        raise errors.JobFailed(errors.BAD_MESSAGE, "already authenticated")

    _handlers: Dict[str, Callable[[Connection, Any, Any], None]] = {
        "ping": _on_ping,
        "status": _on_status,
        "cancel": _on_cancel,
        "hello": _on_hello,
    }

    def _finish(self, drain: bool, started: bool = True) -> None:
        cancelled = self.server.jobs.cancel_owned_by(self)
        if cancelled:
            log.info("connection %d closed: cancelled %d job(s)", self.id, cancelled)
        with self._outbox_lock:
            self._closed = True
            self._outbox.put(_CLOSE)
        if started:
            self._sender.join(timeout=5.0)
        if drain:
            # Read what the peer still sends so that closing does not reset the connection before it has
            # read our error reply.
            deadline = time.monotonic() + 2.0
            drained = 0
            try:
                while time.monotonic() < deadline and drained < (64 << 20):
                    self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                    chunk = self.sock.recv(1 << 16)
                    if not chunk:
                        break
                    drained += len(chunk)
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.server.forget(self)


# ----------------------------------------------------------------------------------------------- server


class BridgeServer:
    """Accepts authenticated bridge connections and feeds their edit requests to one job queue."""

    def __init__(
        self,
        runners: Union[JobRunner, Mapping[str, JobRunner]],
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Optional[Limits] = None,
        handshake_timeout: float = 10.0,
        max_connections: int = 64,
        max_queued: int = 32,
        versions: Optional[Dict[str, Any]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        job_limits: Optional[JobLimits] = None,
    ) -> None:
        """``ssl_context`` (:func:`bridge.tls.server_context`): only TLS connections are accepted.
        ``job_limits`` (bridge/limits.py): reported in status replies; its ``max_jobs_per_connection``
        bounds what one client holds in the queue (the runners check the rest)."""
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must have at least {MIN_TOKEN_LENGTH} characters")
        # One runner serves the "edit" kind; a mapping names each job kind (message type) it serves.
        self.runners: Dict[str, JobRunner] = (
            dict(runners) if isinstance(runners, Mapping) else {"edit": runners}
        )
        self._versions = dict(versions or {})
        self.ssl_context = ssl_context
        if ssl_context is not None and hasattr(ssl_context, "num_tickets"):
            # No TLS 1.3 session tickets: the server writes nothing of its own while a reader thread reads.
            ssl_context.num_tickets = 0
        self._token = token.encode("utf-8")
        self.limits = limits or Limits()
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.job_limits = job_limits or DEFAULT_LIMITS
        self.jobs = JobQueue(self.runners, max_queued, self.job_limits.max_jobs_per_connection)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=64)
        self.host, self.port = self._listener.getsockname()[:2]
        self._connections: Set[Connection] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._job_ids = itertools.count(1)
        self._closing = False
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept", daemon=True)

    def start(self) -> None:
        self.jobs.start()
        self._accept_thread.start()
        log.info("listening on %s:%d", self.host, self.port)

    def close(self, job_timeout: float = 5.0) -> None:
        """Stop accepting, cancel the jobs and wait up to ``job_timeout`` s for the running one to end."""
        self._closing = True
        self.jobs.stop(job_timeout)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)

    def next_job_id(self) -> str:
        return f"j{next(self._job_ids)}"

    @property
    def runner(self) -> JobRunner:
        """The runner of the first job kind (the edit runner): it reports device and models in status."""
        return next(iter(self.runners.values()))

    def versions(self) -> Dict[str, Any]:
        return dict(self._versions)

    def status(self) -> Dict[str, Any]:
        info = dict(self.runner.status())
        info["jobs"] = sorted(self.runners)
        versions = dict(info.get("versions", {}), protocol=PROTOCOL_VERSION, **self.versions())
        info["versions"] = versions
        info["queue"] = self.jobs.snapshot()
        info["limits"] = self.job_limits.to_status()
        with self._lock:
            info["connections"] = len(self._connections)
        info["pid"] = os.getpid()
        return info

    def check_images(
        self, attachments: Dict[str, bytes], runner: Optional[JobRunner] = None, kind: str = "edit"
    ) -> Dict[str, bytes]:
        """The images of a request: those the runner requires, any it allows, all PNG of one size."""
        runner = runner or self.runner
        required = tuple(runner.required_images)
        unknown = sorted(name for name in attachments if not runner.accepts_image(name))
        if unknown:
            raise errors.JobFailed(
                errors.INVALID_INPUT, "unexpected attachment(s): {}".format(", ".join(unknown))
            )
        missing = [name for name in required if name not in attachments]
        if missing:
            raise errors.JobFailed(
                errors.INVALID_INPUT, "{} needs the attachment(s): {}".format(kind, ", ".join(missing))
            )
        sizes = {}
        for name, data in attachments.items():
            try:
                info = png_info(data)
            except ValueError as exc:
                raise errors.JobFailed(errors.INVALID_INPUT, f"{name}: {exc}") from None
            if info.width * info.height > self.limits.max_image_pixels:
                raise errors.JobFailed(
                    errors.TOO_LARGE,
                    f"{name}: {info.width}x{info.height} pixels exceed the limit of "
                    f"{self.limits.max_image_pixels}",
                )
            sizes[name] = (info.width, info.height)
        for name, size in sizes.items():
            if "image" in sizes and size != sizes["image"]:
                raise errors.JobFailed(
                    errors.INVALID_INPUT,
                    f"{name} is {size[0]}x{size[1]} but the image is {sizes['image'][0]}x{sizes['image'][1]}",
                )
        return dict(attachments)

    def forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                sock, address = self._listener.accept()
            except OSError:
                if self._closing:
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, address, next(self._ids))
            with self._lock:
                too_many = len(self._connections) >= self.max_connections
                if not too_many:
                    self._connections.add(conn)
            if too_many:
                log.warning("refusing connection from %s: %d connections open", address, self.max_connections)
                try:
                    sock.settimeout(1.0)
                    for part in encode_message(
                        "error",
                        error_fields(errors.TOO_MANY_CONNECTIONS, "too many connections to the engine"),
                    ):
                        sock.sendall(part)
                except OSError:
                    pass
                sock.close()
                continue
            threading.Thread(target=conn.serve, name=f"conn-{conn.id}", daemon=True).start()


