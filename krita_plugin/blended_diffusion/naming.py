"""Names of the layers the plugin creates, and the match figure shown for each candidate.

The engine ranks candidates by CLIP distances (engine ``ranking``): ``masked_clip`` (the result inside
the selection, background zeroed), ``full_clip`` (the whole context region) and ``combined``, their mean;
lower is better. Each is the spherical distance ``d = 2 * arcsin(|a - b| / 2) ** 2`` between unit
embeddings, which is ``theta ** 2 / 2`` for the angle ``theta`` between them. So ``cos(sqrt(2 * d))`` is
the cosine similarity of image and prompt, CLIP's usual score: "match" is that, as a percentage clamped to
0..100. It falls as the distance grows, so the best-ranked candidate always shows the highest match.
"""

import math
from typing import Mapping, Optional

MAX_PROMPT_IN_NAME = 60


def prompt_label(prompt: str) -> str:
    """The prompt as it appears in layer names; an empty prompt is a removal."""
    text = " ".join(prompt.split())
    if not text:
        return "Removal"
    if len(text) > MAX_PROMPT_IN_NAME:
        text = text[: MAX_PROMPT_IN_NAME - 1].rstrip() + "…"
    return text


GROUP_PREFIX = "BD: "  # the candidate groups' names start so (krita_api finds a group's edited layer by it)


def group_name(prompt: str) -> str:
    return f"{GROUP_PREFIX}{prompt_label(prompt)}"


def match_percent(distance: Optional[float]) -> Optional[int]:
    """A spherical CLIP distance as the cosine similarity in percent (higher is better); None stays None."""
    if distance is None or distance != distance or distance < 0:
        return None
    similarity = math.cos(math.sqrt(2.0 * distance))
    return int(round(100.0 * min(max(similarity, 0.0), 1.0)))


def candidate_match(scores: Mapping[str, float]) -> Optional[int]:
    """The match shown for a candidate: from the distance the engine ranked by (``combined``)."""
    for key in ("combined", "masked_clip", "full_clip"):
        if key in scores:
            return match_percent(scores[key])
    return None


def candidate_name(rank: int, scores: Mapping[str, float]) -> str:
    """'#1 match 72%': rank 1 is the best (a removal has no prompt to score against, so only the rank)."""
    match = candidate_match(scores)
    return f"#{rank}" if match is None else f"#{rank} match {match}%"


def candidate_tooltip(rank: int, scores: Mapping[str, float]) -> str:
    """Both parts of the ranking, as match and as the engine's distance."""
    if candidate_match(scores) is None:
        return f"Candidate #{rank}: a removal has no prompt to rank by; candidates keep their order."
    lines = [f"Candidate #{rank}: match {candidate_match(scores)}% (higher is better)"]
    for key, label in (("masked_clip", "inside the selection"), ("full_clip", "with its surroundings")):
        if key in scores:
            lines.append(f"  {label}: match {match_percent(scores[key])}% (CLIP distance {scores[key]:.3f})")
    lines.append("Ranked by the mean of the two distances; match = cosine similarity of image and prompt.")
    return "\n".join(lines)


def accepted_name(prompt: str) -> str:
    return prompt_label(prompt)
