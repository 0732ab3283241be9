"""One job's candidates as shards, and the shards' progress and results merged back into one job's.

An edit starts ``batch_size`` candidates per batch, ``iterations_num`` batches, candidate
``i`` from seed ``seed + i`` (engine/editing). A shard is a run of whole batches: the same edit with
``seed`` moved to its first candidate and ``iterations_num`` its number of batches, so each candidate is
made in the very batch, with the very seed, that one engine would use: the bytes are
the same. The server ranks all candidates once.

Standard library only: the scheduler and the tests use it without Ray or torch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bridge.limits import respaced_steps
from engine.editing.shared.params import EditParams
from engine.job_regions import PROMPTS

RunnerOutput = Tuple[Dict[str, Any], Sequence[Tuple[str, bytes]]]


@dataclass(frozen=True)
class Shard:
    index: int
    params: Dict[str, Any]  # the job's validated params, seed and iterations_num for this shard
    first_candidate: int  # index (among the job's started candidates) of the shard's first one
    candidates: int  # candidates it starts
    work: int  # its candidate-steps: what it reports as progress total


def split_edit(params: Dict[str, Any], workers: int, diffusion_steps: int = 1000) -> List[Shard]:
    """The shards of an edit for ``workers`` workers: at most one per batch, contiguous runs of batches,
    as even as they can be. A random seed (None) is drawn here, once, so every shard shares it."""
    edit = EditParams(**{k: v for k, v in params.items() if k != PROMPTS})  # regions: prompts ride along
    base = int(edit.seed) if edit.seed is not None else secrets.randbelow(2**31)
    steps = respaced_steps(edit.timestep_respacing, diffusion_steps) - int(edit.skip_timesteps)
    per_batch = int(edit.batch_size)
    batches = int(edit.iterations_num)
    count = max(1, min(batches, workers))
    shards = []
    first_batch = 0
    for index in range(count):
        size = batches // count + (1 if index < batches % count else 0)
        first = first_batch * per_batch
        shard_params = dict(params, seed=base + first, iterations_num=size)
        if index:  # previews come from one shard: the one the client would see first anyway
            shard_params["preview_every"] = 0
        shards.append(Shard(index, shard_params, first, size * per_batch, size * per_batch * steps))
        first_batch += size
    return shards


def whole_job(params: Dict[str, Any]) -> List[Shard]:
    """A job that is not split (``extend``: its windows follow one another): one shard."""
    return [Shard(0, dict(params), 0, 0, 0)]


@dataclass
class ProgressMerge:
    """The shards' progress as one job's: steps add up, and the sum never goes back (a shard rerun after
    its worker died counts again from zero, but nothing is reported until it passes what it had shown)."""

    shards: Sequence[Shard]
    done: Dict[int, int] = field(default_factory=dict)  # shard -> most steps it reported
    totals: Dict[int, int] = field(default_factory=dict)  # shard -> the total it reported
    reported: int = 0

    def update(self, shard: Shard, step: int, total: int) -> Optional[Tuple[int, int]]:
        """(step, total) of the job when this report is news, else None."""
        self.done[shard.index] = max(self.done.get(shard.index, 0), int(step))
        self.totals[shard.index] = int(total)
        step_sum = sum(self.done.values())
        if step_sum <= self.reported:
            return None
        self.reported = step_sum
        total_sum = sum(self.totals.get(s.index, s.work) for s in self.shards)
        return step_sum, max(total_sum, step_sum)


def _sort_key(candidate: Dict[str, Any]) -> Tuple[float, int]:
    # engine/editing/ranking.rank_order: lowest combined distance first, ties (and unscored candidates)
    # in generation order, which is seed order
    combined = (candidate.get("scores") or {}).get("combined")
    return (float("inf") if combined is None else float(combined), int(candidate["seed"]))


def merge_results(outputs: Sequence[RunnerOutput], workers_used: int) -> RunnerOutput:
    """One job's result from its shards' (in shard order): all candidates ranked together, attachments
    renamed in rank order, the notes of every shard once."""
    if len(outputs) == 1:
        return outputs[0]
    entries = []
    for fields, attachments in outputs:
        pngs = dict(attachments)
        for candidate in fields["candidates"]:
            entries.append((candidate, pngs[candidate["attachment"]]))
    entries.sort(key=lambda entry: _sort_key(entry[0]))
    candidates, attachments = [], []
    for rank, (candidate, png) in enumerate(entries, start=1):
        name = f"candidate{rank - 1}"
        candidates.append(dict(candidate, rank=rank, attachment=name))
        attachments.append((name, png))
    notes: List[str] = []
    for fields, _ in outputs:
        notes.extend(note for note in fields.get("notes", []) if note not in notes)
    notes.append(f"ran as {len(outputs)} shards on {workers_used} cluster workers")
    merged = dict(outputs[0][0], candidates=candidates, notes=notes)
    return merged, attachments
