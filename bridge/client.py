"""Blocking client of the engine server, and a helper that runs the engine as a subprocess.

Standard library only (Python >= 3.8) so it runs inside Krita. Every call blocks: run it on a worker thread,
never on Krita's GUI thread. One EngineClient carries one call at a time (a lock serialises them); to ask
for status while an edit runs, open a second client.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from bridge import errors
from bridge.protocol import PROTOCOL_VERSION, Limits, Message, MessageReader, encode_message, send_parts

TOKEN_ENV = "BLENDED_DIFFUSION_TOKEN"
_POLL_SECONDS = 0.1  # how often a waiting edit() looks at its cancel event
_SEND_BYTES_PER_SECOND = 1 << 20  # slowest network we allow for when sizing the send timeout

ProgressCallback = Callable[[Dict[str, Any], Optional[bytes]], None]


def _edit_request(
    params: Dict[str, Any],
    image_png: bytes,
    mask_png: Optional[bytes],
    regions: Optional[Sequence[Tuple[bytes, str]]],
) -> Tuple[Dict[str, Any], List[Tuple[str, bytes]]]:
    """(params, attachments) of an edit: the image and its mask, or its regions (ValueError for both,
    neither, or a region that is not a (PNG bytes, prompt) pair)."""
    if "region_prompts" in params:
        raise ValueError("pass the regions as edit(regions=...), not as params['region_prompts']")
    if mask_png is not None and regions:
        raise ValueError("an edit takes a mask or regions, not both: the regions' union is the mask")
    if mask_png is None and not regions:
        raise ValueError("an edit needs a mask or regions")
    attachments: List[Tuple[str, bytes]] = [("image", image_png)]
    if mask_png is not None:
        return params, attachments + [("mask", mask_png)]
    prompts = []
    for index, region in enumerate(regions or ()):
        data, prompt = region if isinstance(region, (tuple, list)) and len(region) == 2 else (None, None)
        if not isinstance(data, (bytes, bytearray)) or not isinstance(prompt, str):
            raise ValueError(f"region {index + 1} must be a (mask PNG bytes, prompt) pair")
        attachments.append((f"region{index}", bytes(data)))
        prompts.append(prompt)
    return dict(params, region_prompts=prompts), attachments


class EngineClient:
    """A connection to the engine server, authenticated with the token on construction."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        timeout: float = 30.0,
        fingerprint: Optional[str] = None,
        png_level: Optional[int] = None,
    ) -> None:
        """With ``fingerprint`` (SHA-256 of the engine's certificate) the connection is TLS and the token is
        sent only after the engine's certificate matched it (:mod:`bridge.tls`).

        ``png_level``: the zlib level (0..9) jobs ask for their result PNGs; 0 for an engine on this machine
        (no bytes to save, 30x cheaper to write than level 1). None leaves it to the engine (level 1, right
        for a remote one; an engine older than this option ignores it)."""
        if png_level is not None and not 0 <= png_level <= 9:
            raise ValueError(f"png_level must be 0..9, got {png_level}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.png_level = png_level
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        try:
            self._sock: Optional[socket.socket] = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise errors.EngineConnectionError(
                f"cannot connect to the engine at {host}:{port}: {exc}"
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if fingerprint:
            from bridge import tls

            try:
                self._sock = tls.wrap_client(self._sock, host, port, fingerprint)
            except ValueError as exc:  # a malformed fingerprint in the settings
                self._sock.close()
                raise errors.EngineTLSError(str(exc)) from None
        self._reader = MessageReader(self._sock, Limits())
        try:
            self._send("hello", {"protocol": PROTOCOL_VERSION, "token": token, "client": "bridge-python"})
            reply = self._read(timeout)
        except BaseException:
            self.close()
            raise
        if reply.type == "error":
            self.close()
            code, message = reply.get("code", "?"), reply.get("message", "")
            if code in (errors.AUTH_FAILED, errors.PROTOCOL_VERSION):
                raise errors.EngineAuthError(message, code)
            if code == errors.TLS_REQUIRED:
                raise errors.EngineTLSError(message, code)
            raise errors.EngineJobError(code, message)
        if reply.type != "welcome":
            self.close()
            raise errors.EngineConnectionError(f"unexpected reply {reply.type!r} to hello")
        self.server_info: Dict[str, Any] = _fields(reply)

    # --- public calls

    def ping(self) -> Dict[str, Any]:
        """The server's pong (its ``time``) plus ``rtt``, the round trip in seconds."""
        started = time.monotonic()
        reply = self._request("ping")
        result = _fields(reply)
        result["rtt"] = time.monotonic() - started
        return result

    def status(self) -> Dict[str, Any]:
        """device, models, versions and queue of the engine (answers while a job runs)."""
        return _fields(self._request("status"))

    def edit(
        self,
        params: Dict[str, Any],
        image_png: bytes,
        mask_png: Optional[bytes],
        init_png: Optional[bytes] = None,
        on_progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
        regions: Optional[Sequence[Tuple[bytes, str]]] = None,
    ) -> Dict[str, Any]:
        """Run an edit job and wait for it.

        ``on_progress(info, preview_png)`` is called with ``info["state"]`` "queued" (and ``position``, the
        number of jobs ahead), "running" when the job starts, then "running" with ``step``/``total``/
        ``candidate_offset`` after each diffusion step; ``preview_png`` is an RGB PNG when previews were
        asked for (``preview_every``). Setting ``cancel`` cancels the job (queued or running) and raises
        JobCancelled. Errors raise EngineJobError(code, message).

        ``regions`` (issue 39): (mask PNG, prompt) pairs instead of ``mask_png`` (then None), sent as the
        attachments ``region0``, ``region1``, ... and the param ``region_prompts`` in the same order;
        ``params["prompt"]`` is the background prompt. A mask and regions, or neither, is a ValueError
        before anything is sent.
        """
        params, attachments = _edit_request(params, image_png, mask_png, regions)
        if init_png is not None:
            attachments.append(("init", init_png))
        return self._run_job("edit", params, attachments, on_progress, cancel)

    def extend(
        self,
        params: Dict[str, Any],
        image_png: bytes,
        on_progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
    ) -> Dict[str, Any]:
        """Run an extend job (text-guided extrapolation) and wait for it; progress and cancel as ``edit``.

        ``params``: the edit parameters plus ``left``/``right``/``top``/``bottom`` (pixels to add),
        ``side_prompts`` ({side: prompt}, overriding ``prompt``), ``blend_band``, ``window``. The result has
        ``canvas_size``, ``offset`` (where the image's top-left lands) and candidates whose PNG covers the
        whole new canvas (alpha 0 on the original).
        """
        return self._run_job("extend", params, [("image", image_png)], on_progress, cancel)

    def _run_job(
        self,
        kind: str,
        params: Dict[str, Any],
        attachments: List[Tuple[str, bytes]],
        on_progress: Optional[ProgressCallback],
        cancel: Optional[threading.Event],
    ) -> Dict[str, Any]:
        size = sum(len(data) for _name, data in attachments)
        with self._lock:
            request_id = next(self._ids)
            fields: Dict[str, Any] = {"id": request_id, "params": params}
            if self.png_level is not None:
                fields["png_level"] = self.png_level
            self._send(kind, fields, attachments, size)
            finished = False
            try:
                result = self._follow_job(request_id, on_progress, cancel)
                finished = True
                return result
            except (errors.EngineJobError, errors.EngineConnectionError):
                finished = True  # the server ended the job (or the connection is gone)
                raise
            finally:
                if not finished:
                    # A callback raised or the thread was interrupted: dropping the connection makes the
                    # server cancel the job; the client cannot be used any more.
                    self.close()

    def _read_or_close(self, timeout: float) -> Optional[Message]:
        """The next message, None after ``timeout``; a broken connection is closed and reported."""
        try:
            return self._reader.read(timeout)
        except errors.BridgeError as exc:
            self.close()
            raise errors.EngineConnectionError(f"lost the connection to the engine: {exc.message}") from None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- internals

    def _follow_job(
        self, request_id: int, on_progress: Optional[ProgressCallback], cancel: Optional[threading.Event]
    ) -> Dict[str, Any]:
        job_id: Optional[str] = None
        cancel_sent = False
        deadline: Optional[float] = time.monotonic() + self.timeout  # for "accepted"; the job takes its time
        while True:
            if cancel is not None and cancel.is_set() and job_id is not None and not cancel_sent:
                self._send("cancel", {"id": next(self._ids), "job": job_id})
                cancel_sent = True
            if deadline is not None and time.monotonic() > deadline:
                self.close()  # so that the server drops the job should it still arrive
                raise errors.EngineConnectionError(
                    f"the engine did not accept the job within {self.timeout} s"
                )
            message = self._read_or_close(_POLL_SECONDS)
            if message is None:
                continue
            mine = message.get("re") == request_id or (job_id is not None and message.get("job") == job_id)
            if not mine:
                continue  # a late reply to an earlier call
            kind = message.type
            if kind == "error":
                code, text = message.get("code", errors.INTERNAL_ERROR), message.get("message", "")
                if code == errors.CANCELLED:
                    raise errors.JobCancelled(text)
                raise errors.EngineJobError(code, text)
            if kind == "accepted":
                job_id, deadline = message.get("job"), None
                if on_progress is not None:
                    on_progress(
                        {"state": "queued", "job": job_id, "position": message.get("position", 0)}, None
                    )
            elif kind == "queued" and on_progress is not None:
                on_progress({"state": "queued", "job": job_id, "position": message.get("position", 0)}, None)
            elif kind == "started" and on_progress is not None:
                on_progress({"state": "running", "job": job_id, "step": 0, "total": 0}, None)
            elif kind == "progress" and on_progress is not None:
                info = {"state": "running", "job": job_id}
                for key in ("step", "total", "candidate_offset"):
                    info[key] = message.get(key, 0)
                preview = message.attachments.get("preview")
                on_progress(info, bytes(preview) if preview is not None else None)
            elif kind == "result":
                if cancel_sent:
                    raise errors.JobCancelled()
                return _result(message)

    def _send(
        self,
        msg_type: str,
        fields: Optional[Dict[str, Any]] = None,
        attachments: List[Tuple[str, bytes]] = (),  # type: ignore[assignment]
        size: int = 0,
    ) -> None:
        sock = self._sock
        if sock is None:
            raise errors.EngineConnectionError("the connection to the engine is closed")
        try:
            sock.settimeout(self.timeout + size / _SEND_BYTES_PER_SECOND)
            send_parts(sock, encode_message(msg_type, fields, attachments))
        except OSError as exc:
            self.close()
            raise errors.EngineConnectionError(f"lost the connection to the engine: {exc}") from None

    def _read(self, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise errors.EngineConnectionError(f"the engine did not answer within {timeout} s")
            if self._sock is None:
                raise errors.EngineConnectionError("the connection to the engine is closed")
            message = self._read_or_close(remaining)
            if message is not None:
                return message

    def _request(self, msg_type: str) -> Message:
        with self._lock:
            request_id = next(self._ids)
            self._send(msg_type, {"id": request_id})
            while True:
                reply = self._read(self.timeout)
                if reply.get("re") != request_id:
                    continue  # a late reply to an earlier call
                if reply.type == "error":
                    raise errors.EngineJobError(
                        reply.get("code", errors.INTERNAL_ERROR), reply.get("message", "")
                    )
                return reply


def _fields(message: Message) -> Dict[str, Any]:
    return {k: v for k, v in message.header.items() if k not in ("type", "re", "attachments")}


def _result(message: Message) -> Dict[str, Any]:
    candidates = []
    for entry in message.get("candidates", []):
        name = entry.get("attachment")
        if name not in message.attachments:
            raise errors.EngineConnectionError(f"the engine's result lacks the image {name!r}")
        candidate = {k: v for k, v in entry.items() if k != "attachment"}
        candidate["png"] = bytes(message.attachments[name])
        candidates.append(candidate)
    result = {k: v for k, v in message.header.items() if k not in ("type", "attachments", "candidates")}
    result.update(candidates=candidates, box=message.get("box"), notes=message.get("notes", []))
    return result


class EngineProcess:
    """Runs ``python -m engine serve`` on loopback with a fresh token and stops it again.

    The token travels in the environment (never on the command line, which other users can read). The
    engine gets ``--exit-on-stdin-eof`` and a pipe as stdin, so it stops by itself if this process dies.
    """

    def __init__(
        self,
        python: str,
        engine_root: str,
        models: str = "default",
        device: Optional[str] = None,
        extra_env: Optional[Dict[str, str]] = None,
        log_path: Optional[str] = None,
    ) -> None:
        self.python = python
        self.engine_root = os.path.abspath(engine_root)
        self.models = models
        self.device = device
        self.extra_env = dict(extra_env or {})
        self.log_path = log_path
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.token: Optional[str] = None
        self.pid: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()
        self._threads: List[threading.Thread] = []

    def command(self) -> List[str]:
        cmd = [self.python, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--models", self.models, "--exit-on-stdin-eof"]
        if self.device:
            cmd += ["--device", self.device]
        if self.log_path:
            cmd += ["--log-file", self.log_path]
        return cmd

    def start(self, timeout: float = 120.0) -> Tuple[str, int, str]:
        """Start the engine and wait for its ready line; return (host, port, token)."""
        if self.alive() and self._ready.is_set():
            return self.host, self.port, self.token  # type: ignore[return-value]
        self.stop()
        token = secrets.token_urlsafe(32)
        env = dict(os.environ)
        env.update(self.extra_env)
        env[TOKEN_ENV] = token
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.engine_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._stderr.clear()
        self._ready.clear()
        creationflags = 0x08000000 if sys.platform == "win32" else 0  # CREATE_NO_WINDOW
        try:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.engine_root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                creationflags=creationflags,
            )
        except OSError as exc:
            raise errors.EngineStartError(f"cannot run {self.python}: {exc}") from None
        self.pid = self._proc.pid
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(self._proc,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            exited = self._proc.poll() is not None
            if exited or time.monotonic() > deadline:
                if exited:
                    self._threads[1].join(2.0)  # collect the last words on stderr
                    why = f"the engine exited with code {self._proc.returncode} before it was ready"
                else:
                    why = f"the engine did not report ready within {timeout:.0f} s"
                tail = self.stderr_tail()
                self.stop(timeout=1.0)  # it never got to watching its stdin: no point in waiting long
                raise errors.EngineStartError(why + ("; its last output:\n" + tail if tail else ""))
        self.token = token
        return self.host, self.port, token  # type: ignore[return-value]

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the engine: close its stdin (it exits by itself), then terminate, then kill."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        for action in (None, proc.terminate, proc.kill):
            if action is not None:
                try:
                    action()
                except OSError:
                    pass
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        for thread in self._threads:
            thread.join(2.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._ready.clear()

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").strip()
            if not self._ready.is_set() and line.startswith("{"):
                try:
                    info = json.loads(line)
                except ValueError:
                    info = None
                if isinstance(info, dict) and isinstance(info.get("port"), int):
                    self.host = str(info.get("host") or "127.0.0.1")
                    self.port = info["port"]
                    self._ready.set()
                    continue
            if line:
                self._stderr.append("[stdout] " + line)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:  # type: ignore[union-attr]
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())
