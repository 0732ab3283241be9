"""``python -m engine serve``: the bridge server the Krita plugin talks to.

Threads: one accepts connections, one per connection reads and answers requests (so ping/status answer even
while a job runs), one sender per connection writes its replies (so a client that stops reading never
blocks the job worker), and one worker runs the edit jobs one at a time from a queue.

The socket/queue machinery (:class:`BridgeServer`, :class:`JobQueue`) is standard library only and takes
the job runner as a parameter, so tests drive it with a fake runner; :class:`EditRunner` is the real one
(torch, engine.editor), imported only inside :func:`run`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import hmac
import io
import ipaddress
import itertools
import json
import logging
import logging.handlers
import os
import platform
import queue
import re
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from bridge import errors
from bridge.png import CHANNELS as PNG_CHANNELS
from bridge.png import encode_png
from bridge.protocol import PROTOCOL_VERSION, Limits, MessageReader, encode_message, png_info

TOKEN_ENV = "BLENDED_DIFFUSION_TOKEN"
MIN_TOKEN_LENGTH = 16
REQUIRED_IMAGES = ("image", "mask")
OPTIONAL_IMAGES = ("init",)

log = logging.getLogger("engine.server")


# ----------------------------------------------------------------------------------------------- jobs


class Job:
    """One edit request: what the runner needs, and how it reports back to the client that sent it."""

    def __init__(
        self, job_id: str, owner: Connection, params: Dict[str, Any], images: Dict[str, bytes]
    ) -> None:
        self.id = job_id
        self.owner = owner
        self.params = params
        self.images = images
        self.cancel = threading.Event()
        self.position = -1
        self.step = 0
        self.total = 0

    def progress(
        self, step: int, total: int, candidate_offset: int = 0, preview_png: Optional[bytes] = None
    ) -> None:
        """Called by the runner (on the worker thread) after each diffusion step."""
        self.step, self.total = step, total
        fields = {"job": self.id, "step": step, "total": total, "candidate_offset": candidate_offset}
        attachments = [("preview", preview_png)] if preview_png else []
        self.owner.send("progress", fields, attachments, droppable=bool(attachments))


RunnerOutput = Tuple[Dict[str, Any], Sequence[Tuple[str, bytes]]]


class JobRunner:
    """What the server needs from a job runner. ``run`` raises JobFailed for errors with a specific code."""

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        """Check an edit request before it is queued; return the params to run with."""
        return params

    def run(self, job: Job) -> RunnerOutput:
        """Run a job; return the result header fields and the attachments (name, PNG bytes)."""
        raise NotImplementedError

    def status(self) -> Dict[str, Any]:
        """device, models and versions for status replies."""
        return {}


class JobQueue:
    """Runs jobs one at a time on a worker thread; the others wait in order and learn their position."""

    def __init__(self, runner: JobRunner, max_queued: int = 32) -> None:
        self._runner = runner
        self._max_queued = max_queued
        self._lock = threading.Condition()
        self._pending: Deque[Job] = collections.deque()
        self._running: Optional[Job] = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            for job in self._pending:
                job.cancel.set()
                job.owner.send(
                    "error", _error_fields(errors.SHUTTING_DOWN, "the engine is shutting down", job)
                )
            self._pending.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job, accepted: Callable[[int], None]) -> None:
        """Queue a job; ``accepted(position)`` is called before the worker can start it."""
        with self._lock:
            if self._stopping:
                raise errors.JobFailed(errors.SHUTTING_DOWN, "the engine is shutting down")
            if len(self._pending) >= self._max_queued:
                raise errors.JobFailed(errors.QUEUE_FULL, f"{len(self._pending)} jobs are waiting already")
            job.position = len(self._pending) + (1 if self._running is not None else 0)
            accepted(job.position)
            self._pending.append(job)
            self._lock.notify_all()

    def cancel(self, job_id: str, owner: Connection) -> Optional[str]:
        """Cancel a job of ``owner``; return its state ("queued" or "running"), None if there is none."""
        with self._lock:
            if self._running is not None and self._running.id == job_id and self._running.owner is owner:
                self._running.cancel.set()
                return "running"
            for job in self._pending:
                if job.id == job_id and job.owner is owner:
                    self._drop_queued(job, "the job was cancelled while queued")
                    return "queued"
        return None

    def cancel_owned_by(self, owner: Connection) -> int:
        """Cancel every job of a client that went away; return how many."""
        count = 0
        with self._lock:
            for job in [j for j in self._pending if j.owner is owner]:
                self._drop_queued(job, "the client disconnected")
                count += 1
            if self._running is not None and self._running.owner is owner:
                self._running.cancel.set()
                count += 1
        return count

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            running = self._running
            return {
                "running": None
                if running is None
                else {"job": running.id, "step": running.step, "total": running.total},
                "queued": [job.id for job in self._pending],
                "length": len(self._pending) + (1 if running is not None else 0),
            }

    def _drop_queued(self, job: Job, why: str) -> None:  # caller holds the lock
        self._pending.remove(job)
        job.cancel.set()
        log.info("job %s cancelled while queued: %s", job.id, why)
        job.owner.send("error", _error_fields(errors.CANCELLED, why, job))
        self._announce_positions()

    def _announce_positions(self) -> None:  # caller holds the lock
        ahead = 1 if self._running is not None else 0
        for index, job in enumerate(self._pending):
            if job.position != index + ahead:
                job.position = index + ahead
                job.owner.send("queued", {"job": job.id, "position": job.position})

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running = job
                job.position = 0
                self._announce_positions()
            try:
                self._run_one(job)
            finally:
                with self._lock:
                    self._running = None

    def _run_one(self, job: Job) -> None:
        log.info("job %s started (connection %d)", job.id, job.owner.id)
        job.owner.send("started", {"job": job.id})
        started = time.monotonic()
        try:
            fields, attachments = self._runner.run(job)
        except errors.JobFailed as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # the engine must outlive any bad job
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            code, message = errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
        else:
            if job.cancel.is_set():
                code, message = errors.CANCELLED, "the job was cancelled"
            else:
                log.info("job %s finished in %.1f s", job.id, time.monotonic() - started)
                job.owner.send("result", dict(fields, job=job.id), attachments)
                return
        log.info("job %s ended with %s: %s", job.id, code, message)
        job.owner.send("error", _error_fields(code, message, job))


def _error_fields(
    code: str, message: str, job: Optional[Job] = None, request_id: Any = None
) -> Dict[str, Any]:
    fields: Dict[str, Any] = {"code": code, "message": message}
    if job is not None:
        fields["job"] = job.id
    if request_id is not None:
        fields["re"] = request_id
    return fields


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

    def serve(self) -> None:
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
            self.send("error", _error_fields(exc.code, exc.message))
        except Exception:  # a bug here must not take the server down
            fatal = True
            log.error("connection %d failed:\n%s", self.id, traceback.format_exc())
            self.send("error", _error_fields(errors.INTERNAL_ERROR, "internal error in the server"))
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
                "error", _error_fields(errors.AUTH_FAILED, "authentication failed: missing or wrong token")
            )
            return False
        version = message.get("protocol")
        if version != PROTOCOL_VERSION:
            self.send(
                "error",
                dict(
                    _error_fields(
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
                    "error", _error_fields(errors.BAD_MESSAGE, "'id' must be a short string or an integer")
                )
                continue
            handler = self._handlers.get(message.type)
            if handler is None:
                self.send(
                    "error",
                    _error_fields(
                        errors.UNKNOWN_TYPE, f"unknown message type {message.type!r}", None, request_id
                    ),
                )
                continue
            if message.attachments and message.type != "edit":
                self.send(
                    "error",
                    _error_fields(
                        errors.BAD_MESSAGE, f"{message.type} takes no attachments", None, request_id
                    ),
                )
                continue
            try:
                handler(self, message, request_id)
            except errors.JobFailed as exc:
                self.send("error", _error_fields(exc.code, exc.message, None, request_id))

    def _on_ping(self, message: Any, request_id: Any) -> None:
        self.send("pong", {"re": request_id, "time": time.time()})

    def _on_status(self, message: Any, request_id: Any) -> None:
        self.send("status", dict(self.server.status(), re=request_id))

    def _on_edit(self, message: Any, request_id: Any) -> None:
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise errors.JobFailed(errors.INVALID_INPUT, "'params' must be an object of edit parameters")
        images = self.server.check_images(message.attachments)
        params = self.server.runner.validate(params, images)
        job = Job(self.server.next_job_id(), self, params, images)

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
        "edit": _on_edit,
        "cancel": _on_cancel,
        "hello": _on_hello,
    }

    def _finish(self, drain: bool) -> None:
        cancelled = self.server.jobs.cancel_owned_by(self)
        if cancelled:
            log.info("connection %d closed: cancelled %d job(s)", self.id, cancelled)
        with self._outbox_lock:
            self._closed = True
            self._outbox.put(_CLOSE)
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
        runner: JobRunner,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Optional[Limits] = None,
        handshake_timeout: float = 10.0,
        max_connections: int = 64,
        max_queued: int = 32,
    ) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must have at least {MIN_TOKEN_LENGTH} characters")
        self.runner = runner
        self._token = token.encode("utf-8")
        self.limits = limits or Limits()
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.jobs = JobQueue(runner, max_queued)
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

    def close(self) -> None:
        self._closing = True
        self.jobs.stop()
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

    def versions(self) -> Dict[str, Any]:
        from engine import __version__

        return {"engine": __version__}

    def status(self) -> Dict[str, Any]:
        info = dict(self.runner.status())
        versions = dict(info.get("versions", {}), protocol=PROTOCOL_VERSION, **self.versions())
        info["versions"] = versions
        info["queue"] = self.jobs.snapshot()
        with self._lock:
            info["connections"] = len(self._connections)
        info["pid"] = os.getpid()
        return info

    def check_images(self, attachments: Dict[str, bytes]) -> Dict[str, bytes]:
        """The images of an edit request: image and mask required, init optional, all PNG of one size."""
        unknown = sorted(set(attachments) - set(REQUIRED_IMAGES) - set(OPTIONAL_IMAGES))
        if unknown:
            raise errors.JobFailed(
                errors.INVALID_INPUT, "unexpected attachment(s): {}".format(", ".join(unknown))
            )
        missing = [name for name in REQUIRED_IMAGES if name not in attachments]
        if missing:
            raise errors.JobFailed(
                errors.INVALID_INPUT, "edit needs the attachment(s): {}".format(", ".join(missing))
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
            if size != sizes["image"]:
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
                        _error_fields(errors.TOO_MANY_CONNECTIONS, "too many connections to the engine"),
                    ):
                        sock.sendall(part)
                except OSError:
                    pass
                sock.close()
                continue
            threading.Thread(target=conn.serve, name=f"conn-{conn.id}", daemon=True).start()


# ------------------------------------------------------------------------------------- the real runner


def _png_bytes(image: Any, level: int = 1) -> bytes:
    """PNG of a PIL image with bridge.png (no per-row filter search: fast for large patches)."""
    mode = image.mode if image.mode in PNG_CHANNELS else ("RGBA" if "A" in image.getbands() else "RGB")
    if image.mode != mode:
        image = image.convert(mode)
    return encode_png(image.width, image.height, mode, image.tobytes(), level)


def _field_kind(spec: dataclasses.Field) -> Tuple[type, bool]:
    """The scalar type of an EditParams field and whether it may be None (from its annotation or default)."""
    annotation = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    optional = "None" in annotation or "Optional" in annotation
    for kind in (bool, int, float, str):
        if re.search(rf"\b{kind.__name__}\b", annotation):
            return kind, optional
    default = spec.default if spec.default is not dataclasses.MISSING else None
    return (type(default) if default is not None else object), optional or default is None


class EditRunner(JobRunner):
    """Runs engine.editor.edit on the models loaded once at start-up."""

    def __init__(self, models: Any, limits: Limits, edit_defaults: Optional[Dict[str, Any]] = None) -> None:
        from engine import editor

        self.models = models
        self.limits = limits
        # The preset's recommended settings: used for the parameters a request leaves out.
        self.edit_defaults: Dict[str, Any] = dict(edit_defaults or {})
        self._editor = editor
        self._param_fields = {f.name: f for f in dataclasses.fields(editor.EditParams)}

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        checked: Dict[str, Any] = {}
        for name, value in {**self.edit_defaults, **params}.items():
            spec = self._param_fields.get(name)
            if spec is None:
                raise errors.JobFailed(errors.INVALID_INPUT, f"unknown edit parameter {name!r}")
            kind, optional = _field_kind(spec)
            if value is None and optional:
                checked[name] = None
                continue
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif kind is str:
                ok = isinstance(value, str)
            else:
                ok = isinstance(value, (str, int, float, bool))
            if not ok:
                raise errors.JobFailed(
                    errors.INVALID_INPUT,
                    "edit parameter {!r} must be {}{}, not {!r}".format(
                        name, kind.__name__, " or null" if optional else "", value
                    ),
                )
            checked[name] = value
        try:
            edit_params = self._editor.EditParams(**checked)
            check = getattr(self._editor, "validate_params", None)
            if check is not None:
                check(edit_params)
        except Exception as exc:
            raise errors.JobFailed(errors.INVALID_INPUT, str(exc)) from None
        return checked

    def status(self) -> Dict[str, Any]:
        import torch

        models = self.models
        versions = {"python": platform.python_version(), "torch": torch.__version__}
        try:
            import open_clip

            versions["open_clip"] = getattr(open_clip, "__version__", "?")
        except ImportError:
            pass
        return {
            "device": str(getattr(models, "device", "?")),
            "models": {
                "preset": getattr(models, "preset", None),
                "image_size": getattr(models, "image_size", None),
                "class_cond": getattr(models, "class_cond", None),
                "edit_defaults": dict(self.edit_defaults),
            },
            "versions": versions,
        }

    def _decode(self, name: str, data: bytes, mode: Optional[str] = None) -> Any:
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:
            raise errors.JobFailed(
                errors.INVALID_INPUT, f"{name} is not a readable PNG image: {exc}"
            ) from None
        return image

    def run(self, job: Job) -> RunnerOutput:
        from PIL import Image

        from engine.errors import Cancelled, EngineError, InputError

        Image.MAX_IMAGE_PIXELS = self.limits.max_image_pixels  # PIL's bomb check, at our own limit
        failure: Optional[Tuple[str, str]] = None
        try:
            image = self._decode("image", job.images["image"])
            mask = self._decode("mask", job.images["mask"])
            init = self._decode("init", job.images["init"]) if "init" in job.images else None
            params = self._editor.EditParams(**job.params)

            def on_progress(progress: Any) -> None:
                preview = getattr(progress, "preview", None)
                job.progress(
                    progress.step,
                    progress.total,
                    getattr(progress, "candidate_offset", 0),
                    _png_bytes(preview) if preview is not None else None,
                )

            result = self._editor.edit(
                image, mask, self.models, params, init_image=init, progress=on_progress, cancel=job.cancel
            )
            candidates = []
            attachments = []
            for index, candidate in enumerate(result.candidates):
                name = f"candidate{index}"
                attachments.append((name, _png_bytes(candidate.patch.convert("RGBA"))))
                candidates.append(
                    {
                        "rank": candidate.rank,
                        "seed": candidate.seed,
                        "scores": dict(candidate.scores),
                        "box": list(candidate.box),
                        "attachment": name,
                    }
                )
            fields = {"candidates": candidates, "box": list(result.box), "notes": list(result.notes)}
            return fields, attachments
        except errors.JobFailed:
            raise
        except Cancelled as exc:
            failure = (errors.CANCELLED, str(exc) or "the job was cancelled")
        except InputError as exc:
            failure = (errors.INVALID_INPUT, str(exc))
        except EngineError as exc:
            failure = (getattr(exc, "code", errors.ENGINE_ERROR), str(exc))
        except Exception as exc:
            if _is_out_of_memory(exc):
                detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                failure = (
                    errors.OUT_OF_MEMORY,
                    f"the engine ran out of memory ({detail}); try a smaller selection, fewer candidates "
                    "(batch_size) or a smaller model",
                )
            else:
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                failure = (errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            job.images = {}  # the PNGs are not needed any more
        # Outside the except blocks, so the traceback (holding tensors) is gone before memory is released.
        release_memory()
        raise errors.JobFailed(*failure)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory() -> None:
    """Free what a failed job left behind: Python garbage and the allocator caches of the GPU."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and torch.backends.mps.is_available():
            mps.empty_cache()
    except Exception:  # freeing caches is best effort
        log.warning("could not empty the device cache:\n%s", traceback.format_exc())


# ------------------------------------------------------------------------------------------ the command


def default_log_path() -> str:
    from engine.registry import user_data_dir

    return str(user_data_dir() / "logs" / "engine-serve.log")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--models", default="default", help="models preset, or a folder with a preset.json")
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)"
    )
    parser.add_argument("--weights-dir", default=None, help="folder of the weight files")
    parser.add_argument("--log-file", default=None, help=f"log file (default: {default_log_path()})")
    parser.add_argument(
        "--max-attachment-mb",
        type=int,
        default=None,
        help="largest image a client may send, in MiB (default: enough for 16384x16384 RGBA)",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (used by the plugin so the engine never outlives Krita)",
    )


def _setup_logging(log_file: str) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 << 20, backupCount=3)
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    except OSError as exc:
        log.warning("cannot write the log file %s: %s", log_file, exc)


def run(args: argparse.Namespace) -> int:
    token = os.environ.pop(TOKEN_ENV, "")  # popped: processes the engine starts need not see it
    if len(token) < MIN_TOKEN_LENGTH:
        print(
            f"error: set {TOKEN_ENV} to a random token of at least {MIN_TOKEN_LENGTH} characters (the plugin "
            "does this); it is read from the environment so that other users cannot see it on the command "
            "line",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print("error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    _setup_logging(args.log_file or default_log_path())
    if not is_loopback(args.host):
        log.warning(
            "listening on %s, not loopback: other machines can reach this engine; they still need the token, "
            "but the traffic is not encrypted (use an SSH tunnel on untrusted networks)",
            args.host,
        )
    limits = Limits()
    if args.max_attachment_mb is not None:
        if args.max_attachment_mb < 1:
            print("error: --max-attachment-mb must be at least 1", file=sys.stderr)
            return 2
        size = args.max_attachment_mb << 20
        limits = dataclasses.replace(limits, max_attachment_bytes=size, max_message_bytes=3 * size)

    # Anything the engine prints while loading must not be taken for the ready line.
    ready_out = sys.stdout
    sys.stdout = sys.stderr
    from engine.errors import EngineError
    from engine.loading import load_models

    started = time.monotonic()
    try:
        from engine.registry import get_preset

        preset = get_preset(args.models)
        models = load_models(preset, args.weights_dir, args.device)
        runner = EditRunner(models, limits, preset.edit_defaults)
        server = BridgeServer(runner, token, args.host, args.port, limits)
    except EngineError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    log.info(
        "models %r loaded on %s in %.1f s",
        args.models,
        getattr(models, "device", "?"),
        time.monotonic() - started,
    )
    if preset.edit_defaults:
        log.info(
            "preset %r recommends %s for parameters a request leaves out", preset.name, preset.edit_defaults
        )

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            log.info("stdin closed: stopping")
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    server.start()
    ready_out.write(json.dumps({"port": server.port, "pid": os.getpid(), "host": server.host}) + "\n")
    ready_out.flush()
    while not stop.wait(0.5):
        pass
    server.close()
    log.info("stopped")
    logging.shutdown()
    sys.stderr.flush()
    # Everything is closed; skip the interpreter's teardown of torch, which takes seconds for nothing.
    os._exit(0)


__all__: List[str] = [
    "BridgeServer",
    "Connection",
    "EditRunner",
    "Job",
    "JobQueue",
    "JobRunner",
    "add_arguments",
    "run",
]
