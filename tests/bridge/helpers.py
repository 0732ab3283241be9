"""Test helpers for the bridge: a standard-library PNG writer and a fake job runner."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from typing import Any, Dict, List, Optional

from bridge import errors
from bridge.jobqueue import Job, JobRunner
from bridge.protocol import PROTOCOL_VERSION, Limits, Message, MessageReader, encode_message, send_parts

TOKEN = "test-token-0123456789abcdef"


def make_png(width: int, height: int, channels: int = 4, fill: int = 128, level: int = 6) -> bytes:
    """An 8-bit PNG of one grey value (channels 1 = L, 3 = RGB, 4 = RGBA), written with zlib only."""
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    row = b"\x00" + bytes([fill]) * (width * channels)
    return png_from_raw(width, height, color_type, row * height, level)


def png_from_raw(width: int, height: int, color_type: int, raw: bytes, level: int = 6) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


class FakeRunner(JobRunner):
    """Runs ``params["steps"]`` fake steps of ``params["delay"]`` seconds each; can be held at step 1.

    ``params["fail"]``: "crash" raises a plain exception, "oom" a JobFailed(out_of_memory).
    The result echoes the image as the only candidate.
    """

    def __init__(self) -> None:
        self.started: List[str] = []
        self.finished: List[str] = []
        self.cancelled: List[str] = []
        self.hold = threading.Event()  # while clear, jobs with params["hold"] wait after their first step
        self.hold.set()
        self.at_first_step = threading.Event()
        self.png_levels: List[Any] = []  # each job's png_level, as the client asked

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        steps = params.get("steps", 3)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 < steps <= 1000:
            raise errors.JobFailed(errors.INVALID_INPUT, "steps must be an integer in 1..1000")
        return params

    def status(self) -> Dict[str, Any]:
        return {"device": "fake", "models": {"preset": "fake"}, "versions": {"runner": "fake"}}

    def run(self, job: Job) -> Any:
        self.started.append(job.id)
        self.png_levels.append(job.png_level)
        steps = job.params.get("steps", 3)
        delay = job.params.get("delay", 0.0)
        fail = job.params.get("fail")
        for step in range(1, steps + 1):
            if job.cancel.is_set():
                self.cancelled.append(job.id)
                raise errors.JobFailed(errors.CANCELLED, f"cancelled at step {step}")
            if fail == "crash" and step == 2:
                raise RuntimeError("the fake model exploded")
            if fail == "oom" and step == 2:
                raise errors.JobFailed(errors.OUT_OF_MEMORY, "fake out of memory")
            preview = make_png(4, 4, 3) if job.params.get("preview") else None
            job.progress(step, steps, 0, preview)
            if step == 1:
                self.at_first_step.set()
                if job.params.get("hold"):
                    deadline = time.monotonic() + 20
                    while (
                        not self.hold.wait(0.01) and not job.cancel.is_set() and time.monotonic() < deadline
                    ):
                        pass
            if delay:
                time.sleep(delay)
        if job.cancel.is_set():
            self.cancelled.append(job.id)
            raise errors.JobFailed(errors.CANCELLED, "cancelled after the last step")
        self.finished.append(job.id)
        candidate = {
            "rank": 1,
            "seed": 7,
            "scores": {"combined": 0.5},
            "box": [0, 0, 4, 4],
            "attachment": "c0",
        }
        fields = {"candidates": [candidate], "box": [0, 0, 4, 4], "notes": ["fake"]}
        return fields, [("c0", bytes(job.images["image"]))]


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


class RawConnection:
    """A bare protocol connection for tests that need to send what EngineClient never would."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = MessageReader(self.sock, Limits())
        self.timeout = timeout

    def hello(self, token: Optional[str] = TOKEN) -> Message:
        fields: Dict[str, Any] = {"protocol": PROTOCOL_VERSION}
        if token is not None:
            fields["token"] = token
        self.send("hello", fields)
        return self.recv()

    def send(self, msg_type: str, fields: Optional[Dict[str, Any]] = None, attachments: Any = ()) -> None:
        send_parts(self.sock, encode_message(msg_type, fields, attachments))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: Optional[float] = None) -> Message:
        message = self.reader.read(timeout or self.timeout)
        if message is None:
            raise AssertionError("no message within the timeout")
        return message

    def recv_until(self, msg_type: str, timeout: Optional[float] = None) -> List[Message]:
        """Messages up to and including the first of ``msg_type``."""
        seen = []
        while True:
            seen.append(self.recv(timeout))
            if seen[-1].type == msg_type:
                return seen

    def assert_closed(self, timeout: float = 5.0) -> None:
        """The server closed the connection (after any replies still in flight)."""
        while True:
            try:
                message = self.reader.read(timeout)
            except (errors.ConnectionClosed, errors.ProtocolError):
                return
            if message is None:
                raise AssertionError("the server kept the connection open")

    def close(self) -> None:
        self.sock.close()
