"""Rounds of one candidate group, as plain data: what each round asked the engine for, the ranking over
every candidate of the group, the next seeds for More, the remembered prompts.

No Krita, no Qt: the docker, the controller and the scripting API share it, and unit tests run it as is.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import naming

EDIT, MORE, VARY, EXTEND = "edit", "more", "vary", "extend"
VARY_STRENGTH = 0.5  # Vary's default: half the schedule, so the chosen candidate's layout stays
HISTORY_LIMIT = 20  # prompts the prompt field remembers


@dataclass
class Round:
    """One press of Edit, More or Vary: the parameters that reproduce its candidates."""

    number: int  # 1 for the group's first round
    kind: str  # EDIT, MORE, VARY or EXTEND
    prompt: str
    seed: int  # the first candidate's seed; candidate i of the round has seed + i
    strength: Optional[float]  # 1 - skip_timesteps / steps; None when the engine's mode chose it
    steps: Optional[int]
    mode: str  # the quality mode: paper, balanced, fast
    source: str = ""  # Vary: the candidate it started from, as the user saw it
    regions: Tuple[str, ...] = ()  # issue 39: the regions' prompts; ``prompt`` is then the background's

    @classmethod
    def from_params(
        cls, number: int, kind: str, params: Mapping[str, Any], source: str = "", regions: Sequence[str] = ()
    ) -> "Round":
        steps = params.get("timestep_respacing")
        skip = params.get("skip_timesteps")
        steps_n = int(str(steps)) if steps is not None and str(steps).isdigit() else None
        strength = None if steps_n is None or skip is None else round(1.0 - int(skip) / steps_n, 3)
        return cls(
            number,
            kind,
            str(params.get("prompt", "")),
            int(params.get("seed", 0)),
            strength,
            steps_n,
            str(params.get("quality", "paper")),
            source,
            tuple(regions),
        )

    def describe(self, seed: Optional[int] = None) -> str:
        """One line for the docker: enough to reproduce the candidate with the scripting API."""
        what = {EDIT: "edit", MORE: "more", VARY: "vary", EXTEND: "extend"}.get(self.kind, self.kind)
        parts = [f"Round {self.number} ({what})", f"prompt '{naming.prompt_label(self.prompt)}'"]
        if self.regions:
            named = " | ".join(naming.prompt_label(p) if p else "(background)" for p in self.regions)
            parts[1] = f"regions '{named}', background prompt '{self.prompt}'"
        parts.append(f"seed {self.seed if seed is None else seed}")
        if self.strength is not None:
            parts.append(f"strength {self.strength:g}")
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        parts.append(f"{self.mode} mode")
        text = ", ".join(parts)
        return f"{text}; {self.source}" if self.source else text


def ranking_distance(scores: Mapping[str, float]) -> Optional[float]:
    """The distance the engine ranks by (lower is better); None for a removal (no prompt to score)."""
    for key in ("combined", "masked_clip", "full_clip"):
        if key in scores:
            return float(scores[key])
    return None


def rank_order(scores: Sequence[Mapping[str, float]]) -> List[int]:
    """Indices of the candidates, best first, over the whole group: by each candidate's CLIP distance
    (the engine's own ranking, so a group's ranks agree with a single edit's); unscored candidates
    (removals) after the scored ones, in the order they arrived."""

    def key(index: int) -> Any:
        distance = ranking_distance(scores[index])
        return (distance is None, distance if distance is not None else 0.0, index)

    return sorted(range(len(scores)), key=key)


def next_seed(seeds: Sequence[int]) -> int:
    """The first seed of More's round: past every candidate's seed, so no candidate is made twice (the
    engine gives candidate i of a round the seed base + i)."""
    return (max(seeds) + 1) % 2**31 if seeds else 0


def variation_source(rank: int, scores: Mapping[str, float], round_number: int, seed: int) -> str:
    """How a Vary round names the candidate it started from (its rank changes as the group grows)."""
    return f"variation of {naming.candidate_name(rank, scores)} (round {round_number}, seed {seed})"


def remember_prompt(history: Sequence[str], prompt: str, limit: int = HISTORY_LIMIT) -> List[str]:
    """The prompt history with ``prompt`` first (moved up when already there); empty prompts are not kept."""
    text = " ".join(prompt.split())
    if not text:
        return list(history)[:limit]
    return ([text] + [p for p in history if p != text])[:limit]


def clean_history(value: Any) -> List[str]:
    """A stored history as a list of strings (anything else in the file is dropped)."""
    if not isinstance(value, list):
        return []
    return [str(p) for p in value if isinstance(p, str) and p.strip()][:HISTORY_LIMIT]


def round_summary(rounds: Sequence[Round], round_number: int, seed: Optional[int] = None) -> str:
    """The docker's line for a candidate of round ``round_number`` (1-based)."""
    for r in rounds:
        if r.number == round_number:
            return r.describe(seed)
    return ""


def as_dict(r: Round) -> Dict[str, Any]:
    return dict(r.__dict__)
