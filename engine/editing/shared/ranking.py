"""Scores and order of the candidates (paper section 4.2.3, and what its Figure 11 shows is missing).

- ``masked_clip``: D_CLIP of the masked result (background zeroed), without augmentations: the paper's
  ranking. It ignores the context, so half an object inside the mask can score well.
- ``full_clip``: D_CLIP of the whole context region (edit composited into its surroundings) to the prompt,
  which sees whether the edit reads as the prompt in place.
- ``combined``: their mean; candidates are sorted by it, lowest (best) first.

All three are spherical distances (lower is better). With an empty prompt there is nothing to score: the
scores are None and the candidates keep their generation order.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from engine.editing.shared.augment import clip_distances

MASKED_WEIGHT = 0.5  # weight of masked_clip in the combined score; full_clip gets the rest


def score_candidates(
    clip_model, results: torch.Tensor, mask: torch.Tensor, text_embed: Optional[torch.Tensor]
) -> List[Dict[str, Optional[float]]]:
    """Scores of each result [B, 3, H, W] in [-1, 1] (composited at model resolution), mask [1, 1, H, W]."""
    if text_embed is None:
        return [{"masked_clip": None, "full_clip": None, "combined": None} for _ in range(results.shape[0])]
    with torch.no_grad():
        masked = clip_distances(clip_model, results * mask, text_embed)
        full = clip_distances(clip_model, results, text_embed)
    scores = []
    for masked_value, full_value in zip(masked.tolist(), full.tolist()):
        combined = MASKED_WEIGHT * masked_value + (1 - MASKED_WEIGHT) * full_value
        scores.append({"masked_clip": masked_value, "full_clip": full_value, "combined": combined})
    return scores


def score_regions(
    clip_model, results: torch.Tensor, masks: torch.Tensor, text_embeds: Sequence[Optional[torch.Tensor]]
) -> List[Dict[str, Optional[float]]]:
    """Scores of each result by every region (issue 39): each region's masked and full distances to its own
    prompt (``masks`` [K, 1, H, W], one embedding per region, None for an empty prompt), their means over
    the regions with a prompt; unscored when none has one."""
    scored = [score_candidates(clip_model, results, masks[k : k + 1], e) for k, e in enumerate(text_embeds)]
    scored = [s for s, e in zip(scored, text_embeds) if e is not None]
    if not scored:
        return score_candidates(None, results, masks[:1], None)
    keys = ("masked_clip", "full_clip", "combined")
    return [
        {key: sum(float(s[i][key]) for s in scored) / len(scored) for key in keys}  # type: ignore[arg-type]
        for i in range(results.shape[0])
    ]


def rank_order(scores: Sequence[Dict[str, Optional[float]]]) -> List[int]:
    """Indices of the candidates, best first (stable: ties and unscored runs keep generation order)."""

    def key(index: int) -> float:
        value = scores[index]["combined"]
        return float("inf") if value is None else float(value)

    return sorted(range(len(scores)), key=key)
