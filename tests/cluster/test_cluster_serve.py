"""``serve --ray local --ray-workers 2`` with the real EngineClient: the same bytes as one engine, merged
progress, cancel within a step, a killed worker, fair order over clients, no worker left.

Run by tests/test_cluster.py inside a loopback-only network namespace (conftest.py).
"""

from __future__ import annotations

import ipaddress
import os
import queue
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from bridge import errors
from bridge.client import EngineClient
from tests.bridge.helpers import TOKEN, RawConnection, make_png
from tests.cluster.conftest import wait_for

IMAGE = make_png(48, 40, 3, 90)
MASK = make_png(48, 40, 1, 255)
# 4 candidates in 2 batches: two shards, one per worker
EDIT = {
    "prompt": "a red ball",
    "timestep_respacing": "20",
    "skip_timesteps": 4,
    "batch_size": 2,
    "iterations_num": 2,
    "seed": 11,
    "aug_num": 2,
}
# pruning: each batch starts 2 and keeps the best one after half the steps
PRUNED = dict(EDIT, batch_size=1, prune_factor=2, prune_at=0.5, seed=23)
# the detail stage (each candidate re-sampled at the 48x40 region's size from its own seed) in each shard
DETAILED = dict(EDIT, detail="on", seed=31)
LONG = dict(EDIT, timestep_respacing="200", skip_timesteps=0)  # cancelled long before its end


def _client(server: Dict[str, Any]) -> EngineClient:
    return EngineClient("127.0.0.1", server["port"], TOKEN, timeout=60.0)


def _cluster(server: Dict[str, Any]) -> Dict[str, Any]:
    with _client(server) as client:
        return client.status()["cluster"]


@pytest.fixture
def two_workers(cluster_server: Dict[str, Any]) -> Dict[str, Any]:
    """The server with both workers live and idle (a test before may have killed some)."""

    def ready() -> bool:
        cluster = _cluster(cluster_server)
        return cluster["workers"] == 2 and cluster["workers_free"] == 2

    wait_for(ready, 240, "two idle workers")
    return cluster_server


@pytest.fixture(scope="session")
def reference(cluster_server: Dict[str, Any]):
    """One engine in this process (engine.jobs.EditRunner on the same tiny weights, one thread): the
    candidates of a job as {seed: (rank, patch PNG bytes)}."""
    import torch

    from bridge.protocol import Limits
    from engine.cluster.worker import ShardJob
    from engine.editing.shared.params import preset_edit_defaults
    from engine.jobs import EditRunner
    from engine.models.loading import load_models
    from engine.models.registry import get_preset

    torch.set_num_threads(1)
    weights = cluster_server["env"]["BLENDED_DIFFUSION_WEIGHTS"]
    runner = EditRunner(
        load_models("tiny", weights, "cpu"), Limits(), preset_edit_defaults(get_preset("tiny"))
    )
    images = {"image": IMAGE, "mask": MASK}

    def run(params: Dict[str, Any]) -> Dict[int, Tuple[int, bytes]]:
        job = ShardJob(
            "ref",
            "edit",
            runner.validate(dict(params), images),
            dict(images),
            None,
            queue.Queue(),
            threading.Event(),
        )
        fields, attachments = runner.run(job)
        pngs = dict(attachments)
        return {c["seed"]: (c["rank"], pngs[c["attachment"]]) for c in fields["candidates"]}

    return run


def _by_seed(result: Dict[str, Any]) -> Dict[int, Tuple[int, bytes]]:
    return {c["seed"]: (c["rank"], c["png"]) for c in result["candidates"]}


def test_every_node_and_worker_is_on_loopback(two_workers: Dict[str, Any]) -> None:
    cluster = _cluster(two_workers)
    addresses = cluster["node_addresses"] + cluster["nodes"]
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


@pytest.mark.parametrize("params", [EDIT, PRUNED, DETAILED], ids=["plain", "pruned", "detail"])
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

    with _client(two_workers) as client:  # previews every 4 steps: they change no result byte
        result = client.edit(dict(params, preview_every=4), IMAGE, MASK, on_progress=on_progress)
    assert "ran as 2 shards on 2 cluster workers" in result["notes"]
    if params is DETAILED:
        assert any(note.startswith("full-resolution detail: on") for note in result["notes"]), result["notes"]
    expected = reference(params)
    assert _by_seed(result) == expected  # seeds, ranks over all candidates, and every byte of the patches
    assert len(expected) == (2 if params is PRUNED else 4)
    steps = [step for step, total in progress if total]
    totals = {total for _step, total in progress if total}
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    assert steps[-1] == max(totals)  # the detail stage's work joins the total when a shard plans it
    first_shard = params["batch_size"] * (2 if params is PRUNED else 1)  # candidates the first shard starts
    assert previews and all(offset < first_shard for offset in previews)  # previews from one shard only


def test_cancel_stops_every_shard_within_one_step(two_workers: Dict[str, Any]) -> None:
    before = _cluster(two_workers)["cancels"]["shards"]
    cancel = threading.Event()
    seen: List[int] = []

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0:
            seen.append(info["step"])
            cancel.set()

    with _client(two_workers) as client, pytest.raises(errors.JobCancelled):
        client.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress, cancel=cancel)
    assert seen and seen[-1] < 200 * 4 // 2
    cancels = _cluster(two_workers)["cancels"]
    assert cancels["shards"] == before + 2  # both shards saw their flag
    assert (
        cancels["max_steps_after_flag"] <= LONG["batch_size"]
    )  # one step of a batch of 2: 2 candidate-steps


def test_a_killed_worker_reruns_its_shard_elsewhere_with_the_same_bytes(
    two_workers: Dict[str, Any], reference: Any
) -> None:
    victim = _cluster(two_workers)["worker_pids"][0]
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            os.kill(victim, signal.SIGKILL)
            killed.set()

    with _client(two_workers) as client:
        result = client.edit(dict(EDIT), IMAGE, MASK, on_progress=on_progress)
    assert killed.is_set()
    assert _by_seed(result) == reference(EDIT)
    assert victim not in _cluster(two_workers)["worker_pids"]


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
    before = _cluster(two_workers)["cancels"]["shards"]
    conn = RawConnection(two_workers["port"], timeout=120)
    assert conn.hello().type == "welcome"
    _submit(conn, 1, dict(LONG))
    while conn.recv(120).type != "progress":
        pass
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    wait_for(lambda: _cluster(two_workers)["workers_free"] == 2, 60, "the shards to stop")
    assert _cluster(two_workers)["cancels"]["shards"] == before + 2


def test_no_worker_left_fails_the_job_clearly_and_the_server_serves_on(two_workers: Dict[str, Any]) -> None:
    pids = _cluster(two_workers)["worker_pids"]
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.set()

    with _client(two_workers) as client:
        with pytest.raises(errors.EngineJobError) as failure:
            client.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress)
        assert failure.value.code == errors.ENGINE_ERROR
        assert "no cluster worker is left" in str(failure.value)
        assert client.ping()  # the same connection still answers
    # the pool starts replacements; once they are up, jobs run again
    wait_for(lambda: _cluster(two_workers)["workers"] == 2, 240, "the replacement workers")
    with _client(two_workers) as client:
        result = client.edit(dict(EDIT, timestep_respacing="10", skip_timesteps=2), IMAGE, MASK)
    assert len(result["candidates"]) == 4


def _session_processes(sid: int, name: bytes) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[3]) == sid and name in command:
                found.append(int(entry.name))
    return found


def test_the_ray_head_gone_fails_jobs_clearly_and_the_server_reconnects(two_workers: Dict[str, Any]) -> None:
    """The head (its GCS) killed mid-job: the job ends with "cluster unavailable", the server keeps
    answering, starts a new local head (it started this one) and its workers, and jobs run again."""
    heads = _session_processes(two_workers["pid"], b"gcs_server")
    assert len(heads) == 1
    killed = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("step", 0) > 0 and not killed.is_set():
            os.kill(heads[0], signal.SIGKILL)
            killed.set()

    with _client(two_workers) as client:
        with pytest.raises(errors.EngineJobError) as failure:
            client.edit(dict(LONG), IMAGE, MASK, on_progress=on_progress)
        assert failure.value.code == errors.ENGINE_ERROR
        assert "cluster unavailable" in str(failure.value), str(failure.value)
        assert client.ping()

    def back() -> bool:
        cluster = _cluster(two_workers)
        return cluster["unavailable"] is None and cluster["workers"] == 2

    wait_for(back, 240, "the cluster to come back")
    cluster = _cluster(two_workers)
    assert all(ipaddress.ip_address(a).is_loopback for a in cluster["node_addresses"] + cluster["nodes"])
    with _client(two_workers) as client:
        result = client.edit(dict(EDIT, timestep_respacing="10", skip_timesteps=2), IMAGE, MASK)
    assert len(result["candidates"]) == 4
