"""What the Ray tests send and how they read it: the scene, the edits, a client, the cluster's status, and
one engine in the test's own process to compare bytes with."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Callable, Dict, Tuple

from bridge.client import EngineClient
from tests.bridge.helpers import TOKEN, make_png
from tests.cluster.processes import wait_for

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
LONG = dict(EDIT, timestep_respacing="200", skip_timesteps=0)  # cancelled long before its end
QUICK = dict(EDIT, timestep_respacing="10", skip_timesteps=2)  # a job that runs again after a fault

Candidates = Dict[int, Tuple[int, bytes]]  # seed -> (rank, patch PNG bytes)


def client(server: Dict[str, Any]) -> EngineClient:
    return EngineClient("127.0.0.1", server["port"], TOKEN, timeout=60.0)


def cluster_status(server: Dict[str, Any]) -> Dict[str, Any]:
    with client(server) as engine:
        return engine.status()["cluster"]


def wait_idle(server: Dict[str, Any], timeout: float = 240) -> Dict[str, Any]:
    """The server once both its workers are live and idle (a test before may have killed some)."""

    def ready() -> bool:
        cluster = cluster_status(server)
        return cluster["workers"] == 2 and cluster["workers_free"] == 2

    wait_for(ready, timeout, "two idle workers")
    return server


def by_seed(result: Dict[str, Any]) -> Candidates:
    return {c["seed"]: (c["rank"], c["png"]) for c in result["candidates"]}


def one_engine(preset: str, weights: str) -> Callable[[Dict[str, Any]], Candidates]:
    """engine.jobs.EditRunner on the preset in this process (one thread): a job's candidates."""
    import torch

    from bridge.protocol import Limits
    from engine.cluster.worker import ShardJob
    from engine.editing.shared.params import preset_edit_defaults
    from engine.jobs import EditRunner
    from engine.models.loading import load_models
    from engine.models.registry import get_preset

    torch.set_num_threads(1)
    runner = EditRunner(
        load_models(preset, weights, "cpu"), Limits(), preset_edit_defaults(get_preset(preset))
    )
    images = {"image": IMAGE, "mask": MASK}

    done: Dict[str, Candidates] = {}  # by the params' JSON: a job another test compared with runs once

    def run(params: Dict[str, Any]) -> Candidates:
        key = json.dumps(params, sort_keys=True)
        if key not in done:
            done[key] = run_once(params)
        return done[key]

    def run_once(params: Dict[str, Any]) -> Candidates:
        checked = runner.validate(dict(params), images)
        job = ShardJob("ref", "edit", checked, dict(images), None, queue.Queue(), threading.Event())
        fields, attachments = runner.run(job)
        pngs = dict(attachments)
        return {c["seed"]: (c["rank"], pngs[c["attachment"]]) for c in fields["candidates"]}

    return run
