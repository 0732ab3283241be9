"""More and Vary: another round of an edit into its candidate group (GUI thread; Krita through krita_api).

A round reuses what the group remembers of its first edit: the source pixels, the selection (mask and
region) and the document size, so the user may change or drop the selection in between. More asks for the
next seeds with the same parameters; Vary starts from a chosen candidate's pixels inside the selection
(the init-image path of scribble mode) at a lower strength. The new candidates join the group and the
whole group is re-ranked. The engine needs nothing new: seeds and the init image already exist.
"""

import copy
from typing import Any, Optional, Tuple

from . import errors, krita_api, naming, pixels, rounds
from .editing import EditRequest, EditResponse
from .params import split_candidates, strength_to_skip


def follow_undo(outcome: Any) -> None:
    """After Krita's Undo took rounds back (their group is gone, an earlier one is back), the outcome
    follows: the earlier group, its candidates and rounds. Does nothing when the group is there."""
    if outcome is None or outcome.finished or krita_api.node_alive(outcome.doc, outcome.group):
        return
    while outcome.previous:
        group, layers, candidates, chosen, round_count = outcome.previous.pop()
        if krita_api.node_alive(outcome.doc, group):
            outcome.group, outcome.layers, outcome.chosen = group, layers, chosen
            outcome.response.candidates = candidates
            del outcome.rounds[round_count:]
            return


def check_group(outcome: Any) -> None:
    """Raises a PluginError (changing nothing) unless ``outcome``'s group can take another round; drops
    candidate layers the user deleted by hand."""
    if outcome is None:
        raise errors.NoGroupError()
    if outcome.finished:
        raise errors.NoGroupError("the last one was accepted or discarded")
    if outcome.busy:
        raise errors.BusyError()
    follow_undo(outcome)
    if outcome.source is None:
        raise errors.NoGroupError("More and Vary work on edits of a selection, not on an extended canvas")
    if not krita_api.document_open(outcome.doc):
        raise errors.GroupSourceError("The document of this candidate group was closed: nothing was changed.")
    if not krita_api.node_alive(outcome.doc, outcome.group):
        raise errors.StaleResultError("the candidate group was deleted")
    if not krita_api.node_alive(outcome.doc, outcome.source):
        raise errors.GroupSourceError(
            "The layer this candidate group was made from was deleted: start a new edit "
            "(nothing was changed)."
        )
    size = (outcome.doc.width(), outcome.doc.height())
    if size != tuple(outcome.doc_size):
        raise errors.GroupSourceError(
            f"The image was resized ({outcome.doc_size[0]}x{outcome.doc_size[1]} -> {size[0]}x{size[1]}) "
            "since this candidate group was made, so its selection no longer fits: start a new edit."
        )
    alive = [i for i, node in enumerate(outcome.layers) if krita_api.node_alive(outcome.doc, node)]
    if not alive:
        raise errors.StaleResultError("every candidate layer was deleted")
    if len(alive) != len(outcome.layers):
        outcome.layers = [outcome.layers[i] for i in alive]
        outcome.response.candidates = [outcome.response.candidates[i] for i in alive]
        outcome.chosen = min(outcome.chosen, len(alive) - 1)


def _round_request(outcome: Any, params: dict, init_rgba: Optional[bytes]) -> EditRequest:
    base = outcome.request
    return EditRequest(base.region, base.image_rgba, base.mask, params, init_rgba, list(base.regions))


def _count(outcome: Any, count: Optional[int]) -> int:
    first = outcome.request.params
    n = int(count) if count is not None else int(first["batch_size"]) * int(first["iterations_num"])
    if not 1 <= n <= 16:
        raise ValueError(f"candidates must be between 1 and 16, got {n}")
    return n


def _seeded(params: dict, outcome: Any, count: int, seed: Optional[int]) -> dict:
    params["seed"] = rounds.next_seed([c.seed for c in outcome.response.candidates]) if seed is None else seed
    params["batch_size"], params["iterations_num"] = split_candidates(count)
    params["preview_every"] = params.get("preview_every", 0)
    return params


def prepare_more(outcome: Any, count: Optional[int] = None, seed: Optional[int] = None) -> EditRequest:
    """The first round's request with the next seeds (``count`` candidates, default as many as then)."""
    check_group(outcome)
    params = _seeded(copy.deepcopy(outcome.request.params), outcome, _count(outcome, count), seed)
    return _round_request(outcome, params, outcome.request.init_rgba)


def prepare_vary(
    outcome: Any,
    index: Optional[int] = None,
    strength: float = rounds.VARY_STRENGTH,
    prompt: Optional[str] = None,
    count: Optional[int] = None,
    seed: Optional[int] = None,
) -> Tuple[EditRequest, str]:
    """A round that starts from candidate ``index`` (default: the one shown) over the source inside the
    selection. Returns (request, the source's description for the new candidates' tooltips)."""
    check_group(outcome)
    index = outcome.chosen if index is None else int(index)
    if not 0 <= index < len(outcome.layers):
        raise IndexError(f"candidate index {index} out of range 0..{len(outcome.layers) - 1}")
    params = _seeded(copy.deepcopy(outcome.request.params), outcome, _count(outcome, count), seed)
    steps = int(str(params.get("timestep_respacing", "100")))
    # An explicit schedule: the strength is the point of a variation (a mode would otherwise choose it).
    params["timestep_respacing"] = str(steps)
    params["skip_timesteps"] = strength_to_skip(float(strength), steps)
    if prompt is not None:
        params["prompt"] = prompt.strip()
    candidate = outcome.response.candidates[index]
    rx, ry, rw, rh = outcome.request.region
    x, y, w, h = candidate.box
    init = pixels.composite_over(outcome.request.image_rgba, rw, rh, candidate.rgba, (x - rx, y - ry, w, h))
    source = rounds.variation_source(candidate.rank, candidate.scores, candidate.round, candidate.seed)
    return _round_request(outcome, params, init), source


def add_round(outcome: Any, request: EditRequest, response: EditResponse, kind: str, source: str = "") -> int:
    """Put a round's candidates into the group and re-rank the whole group (GUI thread). The candidate
    shown stays shown after More; after Vary the best new one is shown. Returns how many were added.

    The group is rebuilt in rank order (the old candidate layers copied, so paint the user added stays)
    and swapped for the old one: Krita's Undo then takes the round back in two steps, names and order
    included."""
    if not krita_api.document_open(outcome.doc):
        raise errors.DocumentClosedError()
    if not krita_api.node_alive(outcome.doc, outcome.group):
        raise errors.StaleResultError("the candidate group was deleted while the engine worked")
    number = max((r.number for r in outcome.rounds), default=0) + 1
    new = list(response.candidates)
    for candidate in new:
        candidate.round = number
    old = list(outcome.response.candidates)
    shown = old[outcome.chosen] if old else None
    # What Krita's Undo brings back: the old group, with the ranks and names it had (see follow_undo).
    snapshot = (outcome.group, list(outcome.layers), [copy.copy(c) for c in old], outcome.chosen)
    outcome.previous.append(snapshot + (len(outcome.rounds),))
    originals = list(outcome.layers) + [None] * len(new)
    candidates = old + new
    order = rounds.rank_order([c.scores for c in candidates])
    ranked = [candidates[i] for i in order]
    for rank, candidate in enumerate(ranked, 1):
        candidate.rank = rank
    if kind == rounds.VARY:
        chosen = min(order.index(len(old) + i) for i in range(len(new)))  # the best variation
    else:
        chosen = next((i for i, c in enumerate(ranked) if c is shown), 0)
    layers = [
        (naming.candidate_name(c.rank, c.scores), c.box, c.rgba, originals[i]) for i, c in zip(order, ranked)
    ]
    outcome.group, outcome.layers = krita_api.replace_group(outcome.doc, outcome.group, layers, chosen)
    outcome.response.candidates = ranked
    outcome.chosen = chosen
    regions = [prompt for prompt, _mask in request.regions]
    outcome.rounds.append(rounds.Round.from_params(number, kind, request.params, source, regions))
    outcome.notes.extend(response.notes)
    return len(new)
