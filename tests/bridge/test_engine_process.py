"""End to end: a real ``python -m engine serve --models tiny`` subprocess, started once for this module.

Jobs use the tiny preset with few diffusion steps and no prompt, so a full job takes seconds on a CPU.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from PIL import Image, ImageDraw

from bridge import errors
from bridge.client import EngineClient, EngineProcess
from bridge.protocol import MAGIC, PROTOCOL_VERSION, encode_message
from tests.bridge.helpers import RawConnection, make_png, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK = {"prompt": "", "timestep_respacing": "10", "skip_timesteps": 8, "batch_size": 1, "iterations_num": 1}
LONG = {"prompt": "", "timestep_respacing": "100", "skip_timesteps": 0, "batch_size": 1, "iterations_num": 8}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def scene() -> Tuple[bytes, bytes]:
    image = Image.new("RGB", (80, 60), (90, 140, 200))
    ImageDraw.Draw(image).rectangle((0, 40, 79, 59), fill=(60, 160, 60))
    mask = Image.new("L", (80, 60), 0)
    ImageDraw.Draw(mask).ellipse((30, 20, 50, 40), fill=255)
    return png(image), png(mask)


IMAGE, MASK = scene()


class Engine:
    def __init__(self, process: EngineProcess, host: str, port: int, token: str, log_path: Path) -> None:
        self.process, self.host, self.port, self.token, self.log_path = process, host, port, token, log_path

    def client(self, token: Optional[str] = None) -> EngineClient:
        return EngineClient(self.host, self.port, self.token if token is None else token, timeout=30.0)

    def raw(self) -> RawConnection:
        return RawConnection(self.port, self.host)

    def wait_idle(self, timeout: float = 30.0) -> Dict[str, Any]:
        with self.client() as client:
            wait_until(lambda: client.status()["queue"]["length"] == 0, timeout, "the engine to become idle")
            return client.status()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("engine")
    log_path = tmp / "engine.log"
    process = EngineProcess(
        sys.executable,
        str(REPO_ROOT),
        models="tiny",
        device="cpu",
        extra_env={"BLENDED_DIFFUSION_WEIGHTS": str(tmp / "weights")},
        log_path=str(log_path),
    )
    host, port, token = process.start(timeout=240)
    try:
        yield Engine(process, host, port, token, log_path)
    finally:
        process.stop()
    assert not process.alive()


def run_job(client: EngineClient, params: Dict[str, Any], reports: List[Any], cancel=None) -> Dict[str, Any]:
    return client.edit(
        params, IMAGE, MASK, on_progress=lambda info, p: reports.append((info, p)), cancel=cancel
    )


class JobThread(threading.Thread):
    def __init__(self, client: EngineClient, params: Dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client, self.params = client, params
        self.cancel = threading.Event()
        self.reports: List[Any] = []
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.result = run_job(self.client, self.params, self.reports, self.cancel)
        except BaseException as exc:  # noqa: B036 - the test asserts on it
            self.error = exc

    def states(self) -> List[Tuple[str, Any]]:
        return [(info["state"], info.get("position", info.get("step"))) for info, _png in self.reports]


def test_ready_engine_answers_ping_and_status(engine):
    assert engine.process.alive() and engine.process.pid > 0
    assert engine.host == "127.0.0.1"
    with engine.client() as client:
        assert client.ping()["rtt"] >= 0
        status = client.status()
    assert status["device"] == "cpu"
    assert status["models"]["preset"] == "tiny" and status["models"]["image_size"] > 0
    assert status["versions"]["protocol"] == PROTOCOL_VERSION and status["versions"]["torch"]
    assert status["pid"] == engine.process.pid
    assert status["queue"]["running"] is None


def test_full_job_with_progress_and_result(engine):
    reports: List[Any] = []
    with engine.client() as client:
        result = run_job(client, dict(QUICK, batch_size=2, seed=5, preview_every=1), reports)
    steps = [
        (info["step"], info["total"]) for info, _p in reports if info["state"] == "running" and info["step"]
    ]
    assert steps == [(2, 4), (4, 4)]  # candidate-steps: 2 candidates x 2 steps
    previews = [p for info, p in reports if p is not None]
    assert previews and Image.open(io.BytesIO(previews[0])).size[0] > 0
    candidates = result["candidates"]
    assert [c["rank"] for c in candidates] == [1, 2]
    assert all(isinstance(c["seed"], int) for c in candidates)
    assert len({c["seed"] for c in candidates}) == 2
    assert {"masked_clip", "full_clip", "combined"} <= set(candidates[0]["scores"])
    x, y, w, h = result["box"]
    assert 0 <= x and 0 <= y and x + w <= 80 and y + h <= 60
    for candidate in candidates:
        patch = Image.open(io.BytesIO(candidate["png"]))
        assert patch.mode == "RGBA"
        assert patch.size == tuple(candidate["box"][2:])
        assert patch.getchannel("A").getextrema()[1] == 255  # the mask's inside is opaque


def test_cancel_of_a_running_and_a_queued_job(engine):
    first_client, second_client = engine.client(), engine.client()
    first = JobThread(first_client, LONG)
    first.start()
    wait_until(
        lambda: any(state == "running" and step for state, step in first.states()), 60, "the first step"
    )
    second = JobThread(second_client, QUICK)
    second.start()
    wait_until(lambda: ("queued", 1) in second.states(), 30, "the second job to queue")
    second.cancel.set()
    second.join(30)
    assert isinstance(second.error, errors.JobCancelled)
    assert not any(state == "running" for state, _step in second.states())
    first.cancel.set()
    first.join(30)
    assert isinstance(first.error, errors.JobCancelled)
    assert engine.wait_idle()["queue"] == {"running": None, "queued": [], "length": 0}
    with first_client:  # the connection of a cancelled job is still good
        assert first_client.ping()
    second_client.close()


def test_client_that_disconnects_mid_job_has_its_job_cancelled(engine):
    raw = engine.raw()
    assert raw.hello(engine.token).type == "welcome"
    raw.send("edit", {"id": 1, "params": LONG}, [("image", IMAGE), ("mask", MASK)])
    while raw.recv(60).type != "progress":
        pass
    raw.close()
    status = engine.wait_idle(30)  # LONG would run for minutes: only a cancel empties the queue this soon
    assert status["queue"]["running"] is None
    assert "closed: cancelled 1 job(s)" in engine.log_path.read_text()


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789"])
def test_missing_and_wrong_token_are_refused(engine, token):
    if token is None:
        raw = engine.raw()
        reply = raw.hello(None)
        assert (reply.type, reply.get("code")) == ("error", errors.AUTH_FAILED)
        raw.assert_closed()
    else:
        with pytest.raises(errors.EngineAuthError):
            engine.client(token)
    assert engine.token not in engine.log_path.read_text()


def test_two_clients_at_once(engine):
    clients = [engine.client() for _ in range(2)]
    jobs = [JobThread(client, dict(QUICK, seed=i)) for i, client in enumerate(clients)]
    for job in jobs:
        job.start()
    with engine.client() as observer:  # a third client watches the queue meanwhile
        wait_until(lambda: observer.status()["queue"]["length"] == 2, 30, "both jobs in the queue")
    for job in jobs:
        job.join(120)
        assert job.error is None, job.error
        assert len(job.result["candidates"]) == 1
    assert sorted(job.states()[0][1] for job in jobs) == [0, 1]  # one ran at once, the other queued
    assert jobs[0].result["candidates"][0]["seed"] == 0 and jobs[1].result["candidates"][0]["seed"] == 1
    for client in clients:
        client.close()


# ------------------------------------------------------------------------------------------ robustness


def _frame(header: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(header)) + header


def _hello(token: Any, protocol: Any = PROTOCOL_VERSION) -> bytes:
    return b"".join(encode_message("hello", {"protocol": protocol, "token": token}))


def malformed_inputs(token: str, rng: random.Random) -> Iterator[Tuple[str, bool, bytes]]:
    """(kind, after_auth, bytes): inputs that must each end their connection with an error."""
    edit = b"".join(encode_message("edit", {"id": 1, "params": QUICK}, [("image", IMAGE), ("mask", MASK)]))
    hello = _hello(token)
    for _ in range(200):
        yield "random bytes", rng.random() < 0.5, os.urandom(rng.randint(1, 3000))
    for _ in range(150):
        data = edit if rng.random() < 0.5 else hello
        yield "truncated frame", data is edit, data[: rng.randint(1, len(data) - 1)]
    for _ in range(100):
        size = rng.choice([0xFFFFFFFF, 1 << 31, (1 << 20) + rng.randint(1, 1 << 30)])
        yield "huge header length", rng.random() < 0.5, MAGIC + struct.pack(">I", size)
        huge = {"type": "edit", "attachments": [{"name": "image", "size": rng.randint(3 << 30, 1 << 62)}]}
        yield "huge attachment length", True, _frame(json.dumps(huge).encode())
    for _ in range(150):
        text = bytearray(b'{"type": "edit", "id": 3, "params": {"prompt": "x"}, "attachments": []}')
        for _flip in range(rng.randint(1, 4)):
            text[rng.randrange(len(text))] = rng.choice(b'{}[]":,\\\x00\xff')
        yield "invalid JSON", rng.random() < 0.5, _frame(bytes(text))
    wrong_types = [
        b"[]",
        b"123",
        b'"hello"',
        b"null",
        b'{"type": 7}',
        b'{"type": ["hello"]}',
        b'{"type": "edit", "attachments": "image"}',
        b'{"type": "edit", "attachments": [{"name": "image", "size": "12"}]}',
        b'{"type": "edit", "attachments": [{"name": null, "size": 1}]}',
        b'{"type": "edit", "attachments": [{"name": "image", "size": -5}]}',
    ]
    for index in range(100):
        yield "wrong types", index % 2 == 0, _frame(wrong_types[index % len(wrong_types)])
    for index in range(60):
        bad_token = [123, None, ["x"], {"t": token}, token[:-1], token + "!"][index % 6]
        yield "hello with a wrong token", False, _hello(bad_token)
    for _ in range(40):
        yield "hello with a wrong protocol", False, _hello(token, rng.choice([0, 2, "1", None, 1.5]))
    for _ in range(50):
        yield "valid header without the token", False, b"".join(encode_message("ping", {"id": 1}))
        yield "edit before the hello", False, edit
    for _ in range(50):  # the header declares two attachments, one arrives
        header = {"type": "edit", "id": 2, "params": QUICK}
        data = b"".join(encode_message(header.pop("type"), header, [("image", IMAGE), ("mask", MASK)]))
        yield "missing attachment bytes", True, data[: -len(MASK)]
    ping = b"".join(encode_message("ping", {"id": 5}, [("blob", b"12345")]))
    for _ in range(50):  # more bytes than declared: the surplus is not a frame
        yield "surplus attachment bytes", True, ping + os.urandom(rng.randint(1, 100))


def non_fatal_inputs(rng: random.Random) -> Iterator[Tuple[str, bytes, str]]:
    """(kind, bytes, expected code): bad requests in valid frames; the connection stays open."""
    for _ in range(60):
        junk = os.urandom(rng.randint(0, 200))
        yield "invalid PNG", _edit({}, [("image", junk), ("mask", MASK)]), errors.INVALID_INPUT
        yield (
            "PNG with a broken body",
            _edit(QUICK, [("image", IMAGE[:60]), ("mask", MASK)]),
            errors.INVALID_INPUT,
        )
    for _ in range(30):
        yield "one image only", _edit(QUICK, [("image", IMAGE)]), errors.INVALID_INPUT
        yield (
            "three images and a stranger",
            _edit(QUICK, [("image", IMAGE), ("mask", MASK), ("init", IMAGE), ("x", MASK)]),
            errors.INVALID_INPUT,
        )
        yield (
            "mask of another size",
            _edit(QUICK, [("image", IMAGE), ("mask", make_png(8, 8, 1))]),
            errors.INVALID_INPUT,
        )
    for value in ["ten", 3.5, True, None, [1], {"a": 1}] * 10:
        yield (
            "wrong parameter type",
            _edit({"batch_size": value}, [("image", IMAGE), ("mask", MASK)]),
            (errors.INVALID_INPUT),
        )
    for _ in range(20):
        yield (
            "unknown parameter",
            _edit({"no_such_option": 1}, [("image", IMAGE), ("mask", MASK)]),
            (errors.INVALID_INPUT),
        )
        yield "params not an object", _edit([1, 2], [("image", IMAGE), ("mask", MASK)]), errors.INVALID_INPUT
        yield "unknown message type", b"".join(encode_message("format_disk", {"id": 1})), errors.UNKNOWN_TYPE
        yield (
            "cancel of no job",
            b"".join(encode_message("cancel", {"id": 1, "job": "j0"})),
            errors.UNKNOWN_JOB,
        )


def _edit(params: Any, attachments: List[Tuple[str, bytes]]) -> bytes:
    return b"".join(encode_message("edit", {"id": 1, "params": params}, attachments))


def send_fatal(engine: Engine, after_auth: bool, data: bytes) -> Optional[str]:
    """Send one malformed input on a fresh connection; return the error code the engine answered with."""
    raw = RawConnection(engine.port, engine.host, timeout=10.0)
    try:
        if after_auth:
            assert raw.hello(engine.token).type == "welcome"
        try:
            raw.sock.sendall(data)
            raw.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the engine may have closed already; it must still have answered
        codes = []
        while True:
            try:
                message = raw.reader.read(10.0)
            except (errors.ConnectionClosed, errors.ProtocolError):
                break
            assert message is not None, "the engine neither answered nor closed"
            if message.type == "error":
                codes.append(message.get("code"))
        return codes[-1] if codes else None
    finally:
        raw.close()


def test_survives_1000_malformed_inputs_then_completes_a_job(engine):
    rng = random.Random(20240611)
    counts: Dict[str, int] = {}
    unanswered = []
    started = time.monotonic()
    for kind, after_auth, data in malformed_inputs(engine.token, rng):
        code = send_fatal(engine, after_auth, data)
        counts[kind] = counts.get(kind, 0) + 1
        if code is None:
            unanswered.append(kind)
    raw = engine.raw()
    assert raw.hello(engine.token).type == "welcome"
    for kind, data, expected in non_fatal_inputs(rng):
        raw.send_raw(data)
        # A PNG whose header is fine is accepted and fails when the job decodes it: read to the error.
        replies = raw.recv_until("error", 30)
        assert replies[-1].get("code") == expected, (kind, replies[-1].header)
        assert [r.type for r in replies[:-1]] in ([], ["accepted", "started"]), kind
        counts[kind] = counts.get(kind, 0) + 1
    raw.send("ping", {"id": "still-there"})
    assert raw.recv().type == "pong"
    raw.close()
    total = sum(counts.values())
    print(f"\nrobustness: tried {total} malformed inputs in {time.monotonic() - started:.1f} s")
    for kind, count in sorted(counts.items()):
        print(f"  {count:4d}  {kind}")
    assert total >= 1000
    assert not unanswered, unanswered  # every input got an error reply before its connection closed

    status = engine.wait_idle()
    wait_until(lambda: engine.wait_idle()["connections"] <= 1, 10, "the bad connections to be closed")
    assert status["pid"] == engine.process.pid and engine.process.alive()
    with engine.client() as client:
        result = client.edit(QUICK, IMAGE, MASK)
    assert len(result["candidates"]) == 1 and result["candidates"][0]["png"].startswith(b"\x89PNG")


def test_extend_job_with_progress_cancel_and_bad_sides(engine):
    reports: List[Any] = []
    params = dict(
        QUICK, batch_size=2, seed=3, left=9, right=21, side_prompts={"left": "hell", "right": "heaven"}
    )
    with engine.client() as client:
        result = client.extend(params, IMAGE, on_progress=lambda info, p: reports.append(info))
        assert result["canvas_size"] == [110, 60] and result["offset"] == [9, 0]
        steps = [info["step"] for info in reports if info["state"] == "running" and info["step"]]
        # progress counts candidate-steps: steps x windows x candidates (batch_size 2, one iteration)
        assert steps[-1] == result["windows"] * 2 * 2 and steps == sorted(steps)
        source = Image.open(io.BytesIO(IMAGE)).convert("RGB")
        for candidate in result["candidates"]:
            patch = Image.open(io.BytesIO(candidate["png"]))
            assert patch.mode == "RGBA" and patch.size == (110, 60)
            alpha = patch.getchannel("A")
            assert alpha.crop((9, 0, 89, 60)).getextrema() == (0, 0)  # the original is not covered
            assert alpha.crop((0, 0, 9, 60)).getextrema() == (255, 255)
            assert alpha.crop((89, 0, 110, 60)).getextrema() == (255, 255)
        assert source.size == (80, 60)
        for bad, message in (
            ({"right": -3}, "must be >= 0"),
            ({}, "nothing to extend"),
            ({"right": 5, "side_prompts": {"top": "sky"}}, "top side"),
        ):
            with pytest.raises(errors.EngineJobError) as info:
                client.extend(dict(QUICK, **bad), IMAGE)
            assert info.value.code == errors.INVALID_INPUT and message in info.value.message
        cancel = threading.Event()

        def cancel_at_first_step(info: Dict[str, Any], _png: Any) -> None:
            if info["state"] == "running" and info.get("step"):
                cancel.set()

        with pytest.raises(errors.JobCancelled):
            client.extend(dict(LONG, right=40), IMAGE, on_progress=cancel_at_first_step, cancel=cancel)
    assert engine.wait_idle()["queue"]["running"] is None
