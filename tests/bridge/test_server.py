"""The bridge server's protocol, queue and cancel handling, driven by a fake job runner over real sockets."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

import pytest

from bridge import errors
from bridge.client import EngineClient
from bridge.protocol import Limits, encode_message
from bridge.server import BridgeServer
from tests.bridge.helpers import TOKEN, FakeRunner, RawConnection, make_png, wait_until

IMAGE = make_png(8, 8, 4)
MASK = make_png(8, 8, 1)


def client_for(server: BridgeServer, token: str = TOKEN) -> EngineClient:
    return EngineClient(server.host, server.port, token, timeout=10.0)


class JobThread(threading.Thread):
    """Runs client.edit on a thread and keeps its outcome and progress reports."""

    def __init__(
        self, client: EngineClient, params: Dict[str, Any], cancel: Optional[threading.Event] = None
    ):
        super().__init__(daemon=True)
        self.client, self.params, self.cancel = client, params, cancel or threading.Event()
        self.reports: List[Dict[str, Any]] = []
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.result = self.client.edit(
                self.params,
                IMAGE,
                MASK,
                on_progress=lambda info, _png: self.reports.append(info),
                cancel=self.cancel,
            )
        except BaseException as exc:  # noqa: B036 - kept for the test to assert on
            self.error = exc

    def positions(self) -> List[int]:
        return [r["position"] for r in self.reports if r["state"] == "queued"]

    def finish(self) -> None:
        self.join(15)
        assert not self.is_alive(), "the job did not end"


def test_ping_and_status(fake_server):
    server, _runner = fake_server
    with client_for(server) as client:
        assert client.server_info["protocol"] == 1
        pong = client.ping()
        assert pong["time"] > 0 and pong["rtt"] >= 0
        status = client.status()
    assert status["device"] == "fake"
    assert status["models"] == {"preset": "fake"}
    assert status["versions"]["protocol"] == 1 and "engine" in status["versions"]
    assert status["queue"] == {"running": None, "queued": [], "length": 0}


def test_full_job_reports_progress_and_result(fake_server):
    server, runner = fake_server
    previews: List[Optional[bytes]] = []
    reports: List[Dict[str, Any]] = []

    def on_progress(info: Dict[str, Any], preview: Optional[bytes]) -> None:
        reports.append(info)
        previews.append(preview)

    with client_for(server) as client:
        result = client.edit({"steps": 4, "preview": True}, IMAGE, MASK, on_progress=on_progress)
    assert [r["state"] for r in reports] == ["queued", "running"] + ["running"] * 4
    assert reports[0]["position"] == 0
    assert [(r["step"], r["total"]) for r in reports[2:]] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(p is not None and p.startswith(b"\x89PNG") for p in previews[2:])
    assert len(result["candidates"]) == 1
    candidate = result["candidates"][0]
    assert candidate["png"] == IMAGE
    assert (candidate["rank"], candidate["seed"], candidate["box"]) == (1, 7, [0, 0, 4, 4])
    assert result["box"] == [0, 0, 4, 4] and result["notes"] == ["fake"]
    assert runner.finished == [result["job"]]


def test_a_client_png_level_reaches_the_job_and_none_is_sent_by_default(fake_server):
    server, runner = fake_server
    with EngineClient(server.host, server.port, TOKEN, timeout=10.0, png_level=0) as client:
        client.edit({"steps": 1}, IMAGE, MASK)
    with client_for(server) as client:
        client.edit({"steps": 1}, IMAGE, MASK)
    assert runner.png_levels == [0, None]
    with pytest.raises(ValueError, match="png_level"):
        EngineClient(server.host, server.port, TOKEN, png_level=12)


def test_status_answers_while_a_job_runs(fake_server):
    server, runner = fake_server
    runner.hold.clear()
    busy = client_for(server)
    job = JobThread(busy, {"hold": True})
    job.start()
    assert runner.at_first_step.wait(10)
    with client_for(server) as other:
        status = other.status()
        assert other.ping()["rtt"] >= 0
    running = status["queue"]["running"]
    assert running["job"] == runner.started[0] and running["step"] == 1
    runner.hold.set()
    job.finish()
    assert job.error is None and job.result is not None
    busy.close()


def test_queue_positions_and_cancel_of_queued_and_running_jobs(fake_server):
    server, runner = fake_server
    runner.hold.clear()
    clients = [client_for(server) for _ in range(3)]
    first = JobThread(clients[0], {"hold": True})
    first.start()
    assert runner.at_first_step.wait(10)
    second = JobThread(clients[1], {"steps": 2})
    second.start()
    wait_until(lambda: second.positions() == [1], what="second job queued")
    third = JobThread(clients[2], {"steps": 2})
    third.start()
    wait_until(lambda: third.positions() == [2], what="third job queued")

    second.cancel.set()  # cancel a queued job
    second.finish()
    assert isinstance(second.error, errors.JobCancelled)
    wait_until(lambda: third.positions() == [2, 1], what="third job moving up")

    first.cancel.set()  # cancel the running job
    first.finish()
    assert isinstance(first.error, errors.JobCancelled)
    third.finish()
    assert third.error is None and third.result is not None
    assert third.positions() == [2, 1]  # then "started" instead of position 0
    assert [r["state"] for r in third.reports][-3:] == ["running"] * 3
    assert len(runner.started) == 2  # the cancelled queued job never ran
    assert runner.cancelled == [runner.started[0]]
    with clients[1] as client:  # a cancelled job leaves its connection usable
        assert client.edit({"steps": 1}, IMAGE, MASK)["candidates"]
    for client in clients:
        client.close()


def test_client_disconnect_cancels_its_running_and_queued_jobs(fake_server):
    server, runner = fake_server
    runner.hold.clear()
    raw = RawConnection(server.port)
    assert raw.hello().type == "welcome"
    attachments = [("image", IMAGE), ("mask", MASK)]
    raw.send("edit", {"id": 1, "params": {"hold": True}}, attachments)
    raw.send("edit", {"id": 2, "params": {"steps": 1}}, attachments)
    assert runner.at_first_step.wait(10)
    wait_until(lambda: server.jobs.snapshot()["length"] == 2, what="two jobs")
    raw.close()
    wait_until(lambda: len(runner.cancelled) == 1, what="the running job cancelled")
    assert runner.started == ["j1"]
    assert server.jobs.snapshot()["length"] == 0
    with client_for(server) as client:
        assert client.edit({"steps": 1}, IMAGE, MASK)["candidates"]
    assert runner.started == ["j1", "j3"]


def test_a_raising_progress_callback_drops_the_connection_and_cancels_the_job(fake_server):
    server, runner = fake_server
    runner.hold.clear()
    client = client_for(server)

    def explode(info: Dict[str, Any], _png: Optional[bytes]) -> None:
        if info.get("step") == 1:
            raise KeyError("callback bug")

    with pytest.raises(KeyError):
        client.edit({"hold": True}, IMAGE, MASK, on_progress=explode)
    assert client.closed
    wait_until(lambda: runner.cancelled == ["j1"], what="the job cancelled")


@pytest.mark.parametrize(
    "token", ["wrong-token-0123456789abcdef", TOKEN[:-1], "", TOKEN + "x", "\u00e9" * 30]
)
def test_wrong_token_is_refused(fake_server, token):
    server, _runner = fake_server
    with pytest.raises(errors.EngineAuthError) as info:
        client_for(server, token)
    assert info.value.code == errors.AUTH_FAILED
    with client_for(server) as client:  # the server still serves others
        assert client.ping()


def test_missing_token_and_requests_before_hello_are_refused(fake_server):
    server, _runner = fake_server
    raw = RawConnection(server.port)
    reply = raw.hello(token=None)
    assert (reply.type, reply.get("code")) == ("error", errors.AUTH_FAILED)
    raw.assert_closed()
    raw = RawConnection(server.port)
    raw.send("ping", {"id": 1})
    reply = raw.recv()
    assert (reply.type, reply.get("code")) == ("error", errors.AUTH_FAILED)
    raw.assert_closed()
    raw = RawConnection(server.port)
    raw.send("hello", {"protocol": 1, "token": TOKEN}, [("image", IMAGE)])  # no attachments before auth
    assert raw.recv().get("code") == errors.TOO_LARGE
    raw.assert_closed()


def test_wrong_protocol_version_is_refused(fake_server):
    server, _runner = fake_server
    raw = RawConnection(server.port)
    raw.send("hello", {"protocol": 99, "token": TOKEN})
    reply = raw.recv()
    assert (reply.get("code"), reply.get("protocol")) == (errors.PROTOCOL_VERSION, 1)
    raw.assert_closed()


def test_silent_client_is_dropped_after_the_handshake_timeout():
    server = BridgeServer(FakeRunner(), TOKEN, handshake_timeout=0.2)
    server.start()
    try:
        raw = RawConnection(server.port)
        assert raw.recv().get("code") == errors.AUTH_FAILED
        raw.assert_closed()
    finally:
        server.close()


def test_client_dribbling_its_hello_is_dropped_after_the_handshake_timeout():
    server = BridgeServer(FakeRunner(), TOKEN, handshake_timeout=0.3)
    server.start()
    try:
        raw = RawConnection(server.port)
        hello = b"".join(encode_message("hello", {"protocol": 1, "token": TOKEN}))
        dropped_while_dribbling = False
        for byte in hello[:-1]:  # one byte every 50 ms: the whole hello would take seconds
            try:
                raw.send_raw(bytes([byte]))
                reply = raw.reader.read(0.05)
            except (OSError, errors.ConnectionClosed, errors.ProtocolError):
                dropped_while_dribbling = True
                break
            if reply is not None:
                assert reply.get("code") == errors.AUTH_FAILED
                dropped_while_dribbling = True
                break
        assert dropped_while_dribbling, "the server waited for the whole dribbled hello"
        raw.assert_closed()
    finally:
        server.close()


def test_two_clients_at_once(fake_server):
    server, runner = fake_server
    clients = [client_for(server) for _ in range(2)]
    jobs = [JobThread(client, {"steps": 3, "delay": 0.02}) for client in clients]
    for job in jobs:
        job.start()
    for job in jobs:
        job.finish()
        assert job.error is None and job.result["candidates"][0]["png"] == IMAGE
    assert sorted(runner.finished) == ["j1", "j2"]
    assert sorted(job.positions()[0] for job in jobs) == [0, 1]
    for client in clients:
        client.close()


def test_runner_crash_becomes_an_error_reply_and_the_server_keeps_serving(fake_server):
    server, _runner = fake_server
    with client_for(server) as client:
        with pytest.raises(errors.EngineJobError) as info:
            client.edit({"fail": "crash"}, IMAGE, MASK)
        assert info.value.code == errors.INTERNAL_ERROR
        assert "exploded" in info.value.message
        with pytest.raises(errors.EngineJobError) as info:
            client.edit({"fail": "oom"}, IMAGE, MASK)
        assert info.value.code == errors.OUT_OF_MEMORY
        assert client.edit({"steps": 1}, IMAGE, MASK)["candidates"]


def test_invalid_requests_get_errors_and_keep_the_connection(fake_server):
    server, _runner = fake_server
    raw = RawConnection(server.port)
    assert raw.hello().type == "welcome"
    bad_requests = [
        ("edit", {"id": 1, "params": {}}, [("image", IMAGE)], errors.INVALID_INPUT),
        ("edit", {"id": 2, "params": []}, [("image", IMAGE), ("mask", MASK)], errors.INVALID_INPUT),
        ("edit", {"id": 3}, [("image", b"not a png"), ("mask", MASK)], errors.INVALID_INPUT),
        ("edit", {"id": 4}, [("image", IMAGE), ("mask", make_png(8, 9, 1))], errors.INVALID_INPUT),
        ("edit", {"id": 5}, [("image", IMAGE), ("mask", MASK), ("extra", IMAGE)], errors.INVALID_INPUT),
        (
            "edit",
            {"id": 6, "params": {"steps": "many"}},
            [("image", IMAGE), ("mask", MASK)],
            errors.INVALID_INPUT,
        ),
        ("cancel", {"id": 7, "job": "j999"}, [], errors.UNKNOWN_JOB),
        ("cancel", {"id": 8, "job": 5}, [], errors.BAD_MESSAGE),
        ("ping", {"id": 9}, [("image", IMAGE)], errors.BAD_MESSAGE),
        ("launch_missiles", {"id": 10}, [], errors.UNKNOWN_TYPE),
        ("hello", {"id": 11, "token": TOKEN, "protocol": 1}, [], errors.BAD_MESSAGE),
        ("edit", {"id": 12, "png_level": 10}, [("image", IMAGE), ("mask", MASK)], errors.INVALID_INPUT),
        ("edit", {"id": 13, "png_level": True}, [("image", IMAGE), ("mask", MASK)], errors.INVALID_INPUT),
    ]
    for msg_type, fields, attachments, code in bad_requests:
        raw.send(msg_type, fields, attachments)
        reply = raw.recv()
        assert (reply.type, reply.get("code"), reply.get("re")) == ("error", code, fields["id"]), reply.header
    raw.send("ping", {"id": {"nested": 1}})
    assert raw.recv().get("code") == errors.BAD_MESSAGE
    raw.send("ping", {"id": "last"})
    assert (raw.recv().type, server.jobs.snapshot()["length"]) == ("pong", 0)
    raw.close()


def test_images_over_the_pixel_limit_are_refused():
    server = BridgeServer(FakeRunner(), TOKEN, limits=Limits(max_image_pixels=100))
    server.start()
    try:
        with client_for(server) as client:
            with pytest.raises(errors.EngineJobError) as info:
                client.edit({}, make_png(11, 10), make_png(11, 10, 1))
            assert info.value.code == errors.TOO_LARGE
            assert client.edit({"steps": 1}, make_png(10, 10), make_png(10, 10, 1))["candidates"]
    finally:
        server.close()


def test_a_protocol_error_closes_only_that_connection(fake_server):
    server, _runner = fake_server
    with client_for(server) as good:
        raw = RawConnection(server.port)
        assert raw.hello().type == "welcome"
        raw.send_raw(b"\x00garbage that is not a frame")
        reply = raw.recv()
        assert (reply.type, reply.get("code")) == ("error", errors.BAD_FRAME)
        raw.assert_closed()
        assert good.ping()


def test_connections_over_the_limit_are_refused_and_the_others_keep_working():
    server = BridgeServer(FakeRunner(), TOKEN, max_connections=2)
    server.start()
    try:
        first, second = client_for(server), client_for(server)
        extra = RawConnection(server.port)
        assert extra.recv().get("code") == errors.TOO_MANY_CONNECTIONS
        extra.assert_closed()
        assert first.ping() and second.ping()
        first.close()
        wait_until(lambda: server.status()["connections"] == 1, what="the closed connection to go")
        with client_for(server) as third:
            assert third.ping()
        second.close()
    finally:
        server.close()
