"""The shared ``serve --ray`` server (tiny models, 2 workers on the session's Ray head) with the real
EngineClient: the same bytes as one engine, merged progress, cancel within a step, fair order over clients,
a disconnected client's shards cancelled. No test here kills a worker (tests/cluster/ray/test_faults.py do,
on their own server).
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest

from bridge import errors
from tests.bridge.helpers import RawConnection
from tests.cluster.processes import wait_for
from tests.cluster.ray.edits import EDIT, IMAGE, LONG, MASK, by_seed, client, cluster_status, wait_idle

# pruning: each batch starts 2 and keeps the best one after half the steps
# the detail stage (each candidate re-sampled at the 48x40 region's size from its own seed) in each shard
DETAILED = dict(EDIT, detail="on", seed=31)


@pytest.fixture
def two_workers(cluster_server: Dict[str, Any]) -> Dict[str, Any]:
    return wait_idle(cluster_server)


def test_every_node_and_worker_is_on_loopback(two_workers: Dict[str, Any]) -> None:
    cluster = cluster_status(two_workers)
    addresses = cluster["node_addresses"] + cluster["nodes"]
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


@pytest.mark.parametrize("params", [EDIT, DETAILED], ids=["plain", "detail"])
def test_same_bytes_as_one_engine_and_progress_never_goes_back(
    two_workers: Dict[str, Any], reference: Any, params: Dict[str, Any]
) -> None:
    progress: List[Tuple[int, int]] = []
    previews: List[int] = []  # candidate_offset of each progress message with a preview

    def on_progress(info: Dict[str, Any], png: Any) -> None:
        if info["state"] == "running":
            progress.append((info.get("step", 0), info.get("total", 0)))
            if png:
                previews.append(info["candidate_offset"])

    with client(two_workers) as engine:  # previews every 4 steps: they change no result byte
        result = engine.edit(dict(params, preview_every=4), IMAGE, MASK, on_progress=on_progress)
    assert "ran as 2 shards on 2 cluster workers" in result["notes"]
    if params is DETAILED:
        assert any(note.startswith("full-resolution detail: on") for note in result["notes"]), result["notes"]
    expected = reference(params)
    assert by_seed(result) == expected  # seeds, ranks over all candidates, and every byte of the patches
    assert len(expected) == 4
    steps = [step for step, total in progress if total]
    totals = {total for _step, total in progress if total}
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    assert steps[-1] == max(totals)  # the detail stage's work joins the total when a shard plans it
    first_shard = params["batch_size"]  # candidates the first shard starts
    assert previews and all(offset < first_shard for offset in previews)  # previews from one shard only


def test_cancel_stops_every_shard_within_one_step(two_workers: Dict[str, Any]) -> None:
    before = cluster_status(two_workers)["cancels"]["shards"]
    cancel = threading.Event()
    seen: List[int] = []

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0:
            seen.append(info["step"])
            cancel.set()

    with client(two_workers) as engine, pytest.raises(errors.JobCancelled):
        engine.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress, cancel=cancel)
    assert seen and seen[-1] < 200 * 4 // 2
    cancels = cluster_status(two_workers)["cancels"]
    assert cancels["shards"] == before + 2  # both shards saw their flag
    assert (
        cancels["max_steps_after_flag"] <= LONG["batch_size"]
    )  # one step of a batch of 2: 2 candidate-steps


def _submit(conn: RawConnection, request_id: int, params: Dict[str, Any]) -> None:
    conn.send("edit", {"id": request_id, "params": params}, [("image", IMAGE), ("mask", MASK)])


def _follow(conn: RawConnection, name: str, log: queue.Queue[Tuple[float, str, Any]], jobs: int) -> None:
    done = 0
    while done < jobs:
        message = conn.recv(120)
        log.put((time.monotonic(), name, message))
        done += message.type in ("result", "error")


def test_three_clients_take_turns_and_see_their_queue_position(two_workers: Dict[str, Any]) -> None:
    one_shard = dict(EDIT, batch_size=1, iterations_num=1, timestep_respacing="30", skip_timesteps=0)
    conns = {name: RawConnection(two_workers["port"], timeout=120) for name in "ABC"}
    for conn in conns.values():
        assert conn.hello().type == "welcome"
    log: queue.Queue[Tuple[float, str, Any]] = queue.Queue()
    for request_id in (1, 2, 3):  # A asks for three jobs: two start at once, one waits
        _submit(conns["A"], request_id, one_shard)
    threads = [threading.Thread(target=_follow, args=(conns["A"], "A", log, 3))]
    threads[0].start()
    events = []
    while sum(m.type == "started" for _t, _n, m in events) < 2:
        events.append(log.get(timeout=120))
    for name in "BC":  # then B and C, one job each: both go before A's third
        _submit(conns[name], 1, one_shard)
        threads.append(threading.Thread(target=_follow, args=(conns[name], name, log, 1)))
        threads[-1].start()
        while not any(n == name and m.type == "accepted" for _t, n, m in events):  # B is in before C
            events.append(log.get(timeout=120))
    for thread in threads:
        thread.join(300)
    while not log.empty():
        events.append(log.get())
    for conn in conns.values():
        conn.close()
    accepted = {(name, m.get("re")): m.get("position") for _t, name, m in events if m.type == "accepted"}
    assert accepted[("B", 1)] == 1 and accepted[("C", 1)] == 2
    positions_a = [m.get("position") for _t, name, m in events if name == "A" and m.type == "queued"]
    assert 3 in positions_a  # A's third job moved back behind B's and C's
    start_times = {}
    for when, name, message in events:
        if message.type == "started":
            start_times.setdefault(name, []).append(when)
    assert max(start_times["B"] + start_times["C"]) < start_times["A"][2]
    assert all(m.type != "error" for _t, _n, m in events), [
        m.header for _t, _n, m in events if m.type == "error"
    ]
    assert sum(m.type == "result" for _t, _n, m in events) == 5


def test_a_disconnected_client_has_its_shards_cancelled(two_workers: Dict[str, Any]) -> None:
    before = cluster_status(two_workers)["cancels"]["shards"]
    conn = RawConnection(two_workers["port"], timeout=120)
    assert conn.hello().type == "welcome"
    _submit(conn, 1, dict(LONG))
    while conn.recv(120).type != "progress":
        pass
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    wait_for(lambda: cluster_status(two_workers)["workers_free"] == 2, 60, "the shards to stop")
    assert cluster_status(two_workers)["cancels"]["shards"] == before + 2
