"""engine/cluster/shards.py without Ray: the shards of a job start exactly the candidates one engine would,
batch by batch with the same seeds; progress merges without going back; results rank as one job's."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from engine.cluster.shards import ProgressMerge, merge_results, split_edit

BASE = {"prompt": "a cat", "timestep_respacing": "20", "skip_timesteps": 4, "seed": 100}


def _started_seeds(params: Dict[str, Any]) -> List[List[int]]:
    """The batches (lists of seeds) an edit with these params starts, as engine/editing makes them."""
    per_batch = params["batch_size"]
    count = per_batch * params["iterations_num"]
    seeds = [params["seed"] + index for index in range(count)]
    return [seeds[i : i + per_batch] for i in range(0, count, per_batch)]


@pytest.mark.parametrize(
    "params, workers, sizes",
    [
        (dict(BASE, batch_size=2, iterations_num=4), 2, [2, 2]),
        (dict(BASE, batch_size=1, iterations_num=5), 2, [3, 2]),
        (dict(BASE, batch_size=4, iterations_num=1), 8, [1]),  # one batch is never split
        (dict(BASE, batch_size=2, iterations_num=3), 3, [1, 1, 1]),
        (dict(BASE, prompt="", batch_size=2, iterations_num=2), 2, [1, 1]),  # no prompt
    ],
)
def test_shards_start_the_same_batches_with_the_same_seeds(
    params: Dict[str, Any], workers: int, sizes: List[int]
) -> None:
    shards = split_edit(params, workers)
    assert [shard.params["iterations_num"] for shard in shards] == sizes
    batches = []
    for shard in shards:
        batches += _started_seeds(shard.params)
        assert shard.params["seed"] == params["seed"] + shard.first_candidate
        assert shard.params.get("preview_every", 0) == 0 or shard.index == 0
    assert batches == _started_seeds(params)
    assert sum(shard.work for shard in shards) == 16 * params["batch_size"] * params["iterations_num"]


def test_a_random_seed_is_drawn_once_for_all_shards() -> None:
    shards = split_edit(dict(BASE, seed=None, batch_size=1, iterations_num=4), 4)
    seeds = [shard.params["seed"] for shard in shards]
    assert seeds == list(range(seeds[0], seeds[0] + 4))


def test_progress_adds_up_and_never_goes_back() -> None:
    shards = split_edit(dict(BASE, batch_size=1, iterations_num=2), 2)
    merge = ProgressMerge(shards)
    assert merge.update(shards[0], 1, 16) == (1, 32)
    assert merge.update(shards[1], 2, 16) == (3, 32)
    assert merge.update(shards[1], 1, 16) is None  # a rerun from zero reports nothing new
    assert merge.update(shards[1], 2, 16) is None
    assert merge.update(shards[1], 3, 16) == (4, 32)


def _output(candidates: List[Dict[str, Any]], note: str) -> Any:
    fields = {"candidates": [], "box": [0, 0, 8, 8], "notes": ["edited the region", note]}
    attachments = []
    for index, (seed, combined) in enumerate(candidates):
        fields["candidates"].append(
            {
                "rank": index + 1,
                "seed": seed,
                "scores": {"combined": combined},
                "attachment": f"candidate{index}",
            }
        )
        attachments.append((f"candidate{index}", f"png of {seed}".encode()))
    return fields, attachments


def test_results_are_ranked_over_all_shards() -> None:
    first = _output([(1, 0.5), (0, 0.7)], "a")
    second = _output([(3, 0.2), (2, 0.7)], "b")
    fields, attachments = merge_results([first, second], 2)
    assert [c["seed"] for c in fields["candidates"]] == [3, 1, 0, 2]  # ties (0.7) in seed order
    assert [c["rank"] for c in fields["candidates"]] == [1, 2, 3, 4]
    pngs = dict(attachments)
    assert [pngs[c["attachment"]] for c in fields["candidates"]] == [
        b"png of 3",
        b"png of 1",
        b"png of 0",
        b"png of 2",
    ]
    assert fields["notes"] == ["edited the region", "a", "b", "ran as 2 shards on 2 cluster workers"]


@pytest.mark.parametrize(
    "params",
    [
        dict(BASE, batch_size=2, iterations_num=3),
        dict(BASE, batch_size=3, iterations_num=2),
        dict(BASE, prompt="  ", batch_size=2, iterations_num=2),
        dict(BASE, timestep_respacing="5", skip_timesteps=4, batch_size=1, iterations_num=3),
    ],
)
def test_the_shards_follow_the_editors_own_plan(params: Dict[str, Any]) -> None:
    """Against engine/editing/diffuse.plan_model_pass itself: the batches the shards start are the plan's."""
    from types import SimpleNamespace

    from bridge.limits import respaced_steps
    from engine.editing.paper.diffuse import plan_model_pass
    from engine.editing.shared.params import EditParams

    edit = EditParams(**params)
    diffusion = SimpleNamespace(num_timesteps=respaced_steps(edit.timestep_respacing))
    plan = plan_model_pass(edit, diffusion)
    expected = [plan.seeds[i : i + plan.batch_size] for i in range(0, len(plan.seeds), plan.batch_size)]
    started = []
    for shard in split_edit(params, 2):
        shard_edit = EditParams(**shard.params)
        shard_plan = plan_model_pass(shard_edit, diffusion)
        seeds = shard_plan.seeds
        started += [seeds[i : i + shard_plan.batch_size] for i in range(0, len(seeds), shard_plan.batch_size)]
    assert started == expected


def test_a_regions_job_is_split_with_its_prompts_in_every_shard() -> None:
    prompts = ["a red kite", "a hot-air balloon"]
    params = dict(BASE, batch_size=1, iterations_num=2, region_prompts=prompts)
    shards = split_edit(params, 2)
    assert [shard.params["region_prompts"] for shard in shards] == [prompts, prompts]
    assert [shard.params["seed"] for shard in shards] == [100, 101]
