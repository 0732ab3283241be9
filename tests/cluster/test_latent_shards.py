"""Latent jobs on the Ray cluster (issue 31): the cluster runs a job as shards of whole batches by seed
(engine/cluster/shards.py) on engine.jobs' own runner, so a toy-latent job split over two workers must give
the same candidates, byte for byte, as one engine. Here without Ray: the shards run on one runner."""

from __future__ import annotations

import queue
import threading
from typing import Any, Dict, Tuple

import pytest

from tests.bridge.helpers import make_png

IMAGE = make_png(40, 30, 3)
MASK = make_png(40, 30, 1, fill=255)
JOB = {"prompt": "a red circle", "seed": 7, "batch_size": 1, "iterations_num": 3}


@pytest.fixture(scope="module")
def runner():
    import torch

    from bridge.protocol import Limits
    from engine.editing.shared.params import preset_edit_defaults
    from engine.jobs import EditRunner
    from engine.models.loading import load_models
    from engine.models.registry import get_preset

    torch.set_num_threads(1)  # a shared machine's cores spin against other processes otherwise
    return EditRunner(
        load_models("toy-latent", None, "cpu"), Limits(), preset_edit_defaults(get_preset("toy-latent"))
    )


def run(runner, params: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
    from engine.cluster.worker import ShardJob

    images = {"image": IMAGE, "mask": MASK}
    job = ShardJob(
        "t", "edit", runner.validate(dict(params), images), images, None, queue.Queue(), threading.Event()
    )
    fields, attachments = runner.run(job)
    return fields, dict(attachments)


def by_seed(fields: Dict[str, Any], pngs: Dict[str, bytes]) -> Dict[int, Tuple[int, bytes]]:
    return {c["seed"]: (c["rank"], pngs[c["attachment"]]) for c in fields["candidates"]}


def test_a_latent_job_split_in_shards_gives_one_engines_bytes(runner) -> None:
    from engine.cluster.shards import merge_results, split_edit

    whole = by_seed(*run(runner, JOB))
    shards = split_edit(dict(JOB), 2)
    assert len(shards) == 2
    outputs = []
    for shard in shards:
        fields, pngs = run(runner, shard.params)
        outputs.append((fields, list(pngs.items())))
    merged_fields, merged_attachments = merge_results(outputs, len(shards))
    assert by_seed(merged_fields, dict(merged_attachments)) == whole
    assert sorted(whole) == [7, 8, 9]
    assert len({png for _rank, png in whole.values()}) == 3, "three different candidates"
