"""Names of the layers the plugin creates."""

from typing import Mapping

MAX_PROMPT_IN_NAME = 60


def prompt_label(prompt: str) -> str:
    """The prompt as it appears in layer names; an empty prompt is a removal."""
    text = " ".join(prompt.split())
    if not text:
        return "Removal"
    if len(text) > MAX_PROMPT_IN_NAME:
        text = text[: MAX_PROMPT_IN_NAME - 1].rstrip() + "…"
    return text


def group_name(prompt: str) -> str:
    return f"BD: {prompt_label(prompt)}"


def candidate_score(scores: Mapping[str, float]) -> float:
    """The score shown to the user: the ranking's combined score (lower is better, D_CLIP)."""
    for key in ("combined", "masked_clip", "full_clip"):
        if key in scores:
            return float(scores[key])
    return float("nan")


def candidate_name(rank: int, scores: Mapping[str, float]) -> str:
    """'#1 score 0.812': rank 1 is the best; the score is the CLIP distance the engine ranked by
    (a removal has no prompt to score against, so only the rank)."""
    score = candidate_score(scores)
    return f"#{rank} score {score:.3f}" if score == score else f"#{rank}"


def accepted_name(prompt: str) -> str:
    return prompt_label(prompt)
