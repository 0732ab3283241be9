"""Regional prompts in one UNet pass (issue 39), after "attention couple" as Krita AI's region nodes do it:

  states  = [background prompt | region 1's prompt | ... | region K's]      side by side along the tokens
  in every cross-attention layer, at that layer's resolution (h x w queries):
      out_k   = CrossAttention(hidden, states_k)                            each prompt's own output
      out     = sum_k w_k * out_k,  w_k = region k's mask on that grid       normalised: they add up to 1,
                                    (the background's: 1 - the regions')     overlaps by the masks' values
  self-attention, the ResNet blocks and the rest of the UNet are untouched.

Every prompt's attention runs in one call of the layer's own processor (the rows repeated once a prompt).
The unconditional half of the classifier-free guidance batch carries the empty prompt once per chunk (so
it batches with the prompted half); rows whose chunks are all the same run once, with that prompt.
A cross-attention output is an affine map of its attention's output, so weighting whole processor outputs
is weighting the attention itself. SDXL's pooled text embedding conditions the whole image: the
background prompt's, or the regions' mean when the background prompt is empty.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import torch

from engine.editing.shared.regions import region_weights


@dataclass
class RegionalPrompts:
    """The prompts' masks of one job: the crops on the model's square (regions.model_crops) and each
    layer's weights, made once per query count."""

    crops: np.ndarray  # [K, side, side] in [0, 1]
    grid: int  # the latent grid's side
    tokens: int  # each prompt's token count
    device: torch.device

    def __post_init__(self) -> None:
        self._weights: Dict[int, torch.Tensor] = {}
        self._plain: Optional[tuple] = None

    @property
    def count(self) -> int:
        """Prompts a cross-attention layer sees: the background's and one per region."""
        return len(self.crops) + 1

    def plain_rows(self, encoder_states: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """[B] bool: the rows whose prompts are all the same (the unconditional half), which give that
        prompt's output and run once; found once per UNet call (every layer gets the same states)."""
        if self._plain is None or self._plain[0] is not encoder_states:
            self._plain = (encoder_states, (states == states[:, :1]).flatten(1).all(1))
        return self._plain[1]

    def weights(self, queries: int, dtype: torch.dtype) -> torch.Tensor:
        """[K + 1, 1, queries, 1]: each prompt's share of every query of a layer with ``queries`` cells."""
        if queries not in self._weights:
            side = layer_side(self.grid, queries)
            grid = region_weights(self.crops, side, self.device)
            self._weights[queries] = grid.flatten(2)[..., None]
        return self._weights[queries].to(dtype)


def layer_side(grid: int, queries: int) -> int:
    """The side of a UNet layer's square grid from its query count (each down block halves, rounding up)."""
    side = grid
    while side * side > queries and side > 1:
        side = (side + 1) // 2
    if side * side != queries:
        raise ValueError(f"{queries} queries are no square grid below the latent's {grid}x{grid}")
    return side


class RegionalCrossAttention:
    """An attention processor that runs the layer's own processor for every prompt chunk and blends the
    outputs by the regions' weights; self-attention (no encoder states) passes straight through."""

    def __init__(self, inner, prompts: RegionalPrompts) -> None:
        self.inner = inner
        self.prompts = prompts

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):  # fmt: skip
        if encoder_hidden_states is None:
            return self.inner(attn, hidden_states, None, attention_mask, temb, *args, **kwargs)
        batch, length, width = encoder_hidden_states.shape
        tokens, count = self.prompts.tokens, self.prompts.count
        if length != tokens * count:
            raise ValueError(f"{length} tokens for {count} prompts of {tokens}")
        states = encoder_hidden_states.view(batch, count, tokens, width)
        plain = self.prompts.plain_rows(encoder_hidden_states, states)
        if hidden_states.ndim != 3:
            raise ValueError("regional cross-attention needs hidden states [batch, queries, channels]")

        def run(hidden, chunk, mask):  # the layer's own processor, as diffusers calls it
            return self.inner(attn, hidden, chunk, mask, temb, *args, **kwargs)

        if plain.all() or not plain.any():
            return self._rows(run, hidden_states, states, bool(plain.all()), attention_mask)
        out = torch.empty_like(hidden_states)
        for rows, same in ((plain, True), (~plain, False)):
            out[rows] = self._rows(run, hidden_states[rows], states[rows], same, attention_mask)
        return out

    def _rows(self, run, hidden, states, same: bool, attention_mask):
        """The layer's output for rows that all share one prompt (``same``) or carry one per region: then
        every prompt's attention in one call (the rows repeated per prompt), blended by the weights."""
        if same:
            return run(hidden, states[:, 0], attention_mask)
        weights = self.prompts.weights(hidden.shape[1], hidden.dtype)
        if attention_mask is not None:  # SD's cross-attention has none; keep any other one per prompt
            parts = [run(hidden, states[:, k], attention_mask) for k in range(states.shape[1])]
            return sum(part * weight for part, weight in zip(parts, weights))
        count, rows = states.shape[1], hidden.shape[0]
        chunks = states.transpose(0, 1).reshape(count * rows, *states.shape[2:])  # prompt-major, as repeat
        outs = run(hidden.repeat(count, 1, 1), chunks, None)
        return (outs.view(count, rows, *outs.shape[1:]) * weights).sum(0)


@contextmanager
def regional_attention(unet, prompts: Optional[RegionalPrompts]) -> Iterator[None]:
    """The UNet's cross-attention layers (``attn2``) regional for the block's duration, restored after
    (also on an error). ``prompts`` None: nothing changes."""
    if prompts is None:
        yield
        return
    original = dict(unet.attn_processors)
    regional = {
        name: RegionalCrossAttention(proc, prompts) if ".attn2." in name else proc
        for name, proc in original.items()
    }
    unet.set_attn_processor(regional)
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def side_by_side(conditionings: Sequence, pooled_from: Sequence) -> object:
    """One conditioning with the ``conditionings``' states side by side along the tokens; SDXL's added
    kwargs from the first, its pooled text embedding the mean of ``pooled_from``'s."""
    from engine.models.latent import Conditioning

    states = torch.cat([c.states for c in conditionings], dim=1)
    first = conditionings[0]
    if first.added is None:
        return Conditioning(states)
    pooled = torch.stack([c.added["text_embeds"] for c in pooled_from]).mean(0)
    return Conditioning(states, {**first.added, "text_embeds": pooled})


def regional_conditionings(models, prompts: Sequence[str], empty, background=None) -> tuple:
    """(cond, uncond) for the regions' prompts: cond the background's and each region's conditioning side
    by side, uncond the empty prompt's repeated once per chunk. ``empty`` / ``background``: the job's
    conditionings on "" and on its background prompt (None when that is empty), already encoded."""
    regions = [models.encode_prompt(p) if p else empty for p in prompts]
    back = empty if background is None else background
    pooled_from = [back] if background is not None else [r for r, p in zip(regions, prompts) if p] or [empty]
    cond = side_by_side([back, *regions], pooled_from)
    uncond = side_by_side([empty] * (len(prompts) + 1), [empty])
    return cond, uncond
