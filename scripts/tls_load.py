"""The bridge server over TLS under load: clients each with a job streaming progress and previews while
they send a storm of cancels, pings and status requests on the same connection, for minutes.

Each connection's socket is read by one thread and written by another on both ends (the server's reader and
sender; here a reader and a storm thread), the case OpenSSL forbids without one owner per SSL object
(bridge.tls.SerialTLSSocket). Every message is checked: frames parse, each job's progress only grows, each
preview and result carries exactly the bytes the runner made, every job ends, every ping is answered, and
no connection goes quiet for ``--hang-seconds`` while it waits for something.

    python scripts/tls_load.py --seconds 180 --clients 3

Prints one JSON report; exit status 1 when it found any problem. Loopback only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge import errors, tls  # noqa: E402
from bridge.jobqueue import Job, JobRunner  # noqa: E402
from bridge.protocol import PROTOCOL_VERSION, Limits, MessageReader, encode_message, send_parts  # noqa: E402
from bridge.server import BridgeServer  # noqa: E402

TOKEN = "load-test-token-0123456789"


def payload(job_id: str, step: int, size: int) -> bytes:
    """The bytes a job sends at a step (a preview) or at the end (step -1): checkable by the client."""
    seed = hashlib.sha256(f"{job_id}:{step}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class LoadRunner(JobRunner):
    """Progress with a preview every ``delay`` seconds for ``steps`` steps, then one result attachment."""

    required_images = ("image",)
    optional_images = ()

    def run(self, job: Job) -> Any:
        steps, delay, size = job.params["steps"], job.params["delay"], job.params["preview_bytes"]
        for step in range(1, steps + 1):
            if job.cancel.is_set():
                raise errors.JobFailed(errors.CANCELLED, f"cancelled at step {step}")
            job.progress(step, steps, 0, payload(job.id, step, size))
            time.sleep(delay)
        return {"candidates": [], "box": [0, 0, 1, 1], "notes": []}, [("r", payload(job.id, -1, 4 * size))]


class LoadClient:
    """One TLS connection: a reader thread checks everything, a storm thread sends cancels and pings."""

    def __init__(self, name: str, port: int, fingerprint: str, options: argparse.Namespace) -> None:
        self.name, self.options = name, options
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = tls.SerialTLSSocket(tls.wrap_client(raw, "127.0.0.1", port, fingerprint))
        self.reader = MessageReader(self.sock, Limits())
        self.rng = random.Random(name)
        self.problems: List[str] = []
        self.counts = {
            "messages": 0,
            "jobs_done": 0,
            "jobs_cancelled": 0,
            "previews_checked": 0,
            "cancels_sent": 0,
            "pings_sent": 0,
            "pongs": 0,
            "statuses": 0,
            "bytes": 0,
        }
        self.max_gap = 0.0
        self.job: Optional[str] = None  # the job running now
        self.request = 0
        self.last_step = 0
        self.send_lock = threading.Lock()  # whole frames from two threads (the bridge's own rule)
        self.stop = threading.Event()

    def send(self, msg_type: str, fields: Dict[str, Any], attachments: Any = ()) -> None:
        with self.send_lock:
            send_parts(self.sock, encode_message(msg_type, fields, attachments))

    def submit(self) -> None:
        self.request += 1
        self.last_step = 0
        params = {
            "steps": self.rng.randint(20, 200),
            "delay": self.options.delay,
            "preview_bytes": self.options.preview_bytes,
        }
        self.send("edit", {"id": self.request, "params": params}, [("image", _tiny_png())])

    def storm(self) -> None:
        while not self.stop.is_set():
            time.sleep(self.rng.uniform(0.0, self.options.storm_interval))
            choice = self.rng.random()
            try:
                if choice < 0.03 and self.job is not None:
                    self.send("cancel", {"id": f"c{self.request}", "job": self.job})
                    self.counts["cancels_sent"] += 1
                elif choice < 0.45:  # a cancel of a job that is not (or no longer) this client's
                    self.send("cancel", {"id": "stray", "job": f"j{self.rng.randint(1, 10**6)}"})
                    self.counts["cancels_sent"] += 1
                elif choice < 0.9:
                    self.send("ping", {"id": "p"})
                    self.counts["pings_sent"] += 1
                else:
                    self.send("status", {"id": "s"})
            except OSError as exc:
                if not self.stop.is_set():
                    self.problems.append(f"{self.name}: send failed: {exc}")
                return

    def read_loop(self, deadline: float) -> None:
        self.submit()
        last = time.monotonic()
        while True:
            try:
                message = self.reader.read(1.0)
            except errors.BridgeError as exc:
                self.problems.append(f"{self.name}: corrupt or broken stream: {exc}")
                return
            now = time.monotonic()
            if message is None:
                if now - last > self.options.hang_seconds:
                    self.problems.append(f"{self.name}: nothing for {now - last:.0f} s while waiting")
                    return
                continue
            self.max_gap, last = max(self.max_gap, now - last), now
            self.counts["messages"] += 1
            self.counts["bytes"] += sum(len(data) for data in message.attachments.values())
            if self._check(message) and now > deadline:
                return  # a job just ended and the time is up

    def _check(self, message: Any) -> bool:
        """Check one message; True when it ended the current job (the next is submitted)."""
        kind = message.type
        if kind == "pong":
            self.counts["pongs"] += 1
        elif kind == "status":
            self.counts["statuses"] += 1
        elif kind == "accepted":
            self.job = message.get("job")
        elif kind == "progress" and message.get("job") == self.job:
            step = message.get("step")
            if step <= self.last_step:
                self.problems.append(f"{self.name}: progress went from {self.last_step} to {step}")
            self.last_step = step
            preview = message.attachments.get("preview")
            if preview is not None:
                if bytes(preview) != payload(self.job, step, self.options.preview_bytes):
                    self.problems.append(f"{self.name}: preview of {self.job} step {step} corrupt")
                self.counts["previews_checked"] += 1
        elif kind == "result":
            if bytes(message.attachments.get("r", b"")) != payload(
                self.job, -1, 4 * self.options.preview_bytes
            ):
                self.problems.append(f"{self.name}: result of {self.job} corrupt")
            self.counts["jobs_done"] += 1
            return self._next()
        elif kind == "error":
            code = message.get("code")
            if message.get("job") == self.job and code == errors.CANCELLED:
                self.counts["jobs_cancelled"] += 1
                return self._next()
            if code != errors.UNKNOWN_JOB:  # stray cancels are answered so
                self.problems.append(f"{self.name}: unexpected error {code}: {message.get('message')}")
        return False

    def _next(self) -> bool:
        self.job = None
        self.submit()
        return True


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


def run_load(
    seconds: float,
    clients: int = 3,
    delay: float = 0.002,
    preview_bytes: int = 16384,
    storm_interval: float = 0.01,
    hang_seconds: float = 30.0,
) -> Dict[str, Any]:
    options = argparse.Namespace(
        delay=delay, preview_bytes=preview_bytes, storm_interval=storm_interval, hang_seconds=hang_seconds
    )
    with tempfile.TemporaryDirectory() as folder:
        cert, key, _ = tls.make_self_signed(folder)
        server = BridgeServer(
            {"edit": LoadRunner()}, TOKEN, "127.0.0.1", 0, ssl_context=tls.server_context(cert, key)
        )
        server.jobs._max_queued = 1000
        server.start()
        started, cpu = time.monotonic(), time.process_time()
        loads = [
            LoadClient(f"client{i}", server.port, tls.certificate_fingerprint(cert), options)
            for i in range(clients)
        ]
        threads = []
        for load in loads:
            load.send("hello", {"token": TOKEN, "protocol": PROTOCOL_VERSION})
            welcome = load.reader.read(10)
            if welcome is None or welcome.type != "welcome":
                load.problems.append(f"{load.name}: no welcome")
                continue
            threads.append(threading.Thread(target=load.read_loop, args=(started + seconds,)))
            threads.append(threading.Thread(target=load.storm, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads[::2]:
            thread.join(seconds + 120)
            if thread.is_alive():
                loads[0].problems.append("a client did not finish: hang")
        for load in loads:
            load.stop.set()
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
        for load in loads:
            load.sock.close()
        server.close()
    totals = {key: sum(load.counts[key] for load in loads) for key in loads[0].counts}
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "clients": clients,
        **totals,
        "max_gap_s": round(max(load.max_gap for load in loads), 3),
        "problems": [problem for load in loads for problem in load.problems],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--preview-bytes", type=int, default=16384)
    args = parser.parse_args()
    report = run_load(args.seconds, args.clients, preview_bytes=args.preview_bytes)
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
