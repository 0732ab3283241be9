"""Extending augmentations and the spherical CLIP distance D_CLIP (paper section 4.2.1).

Each image is shrunk to the CLIP input size by adaptive average pooling and tiled ``aug_num`` times; the
first copy stays clean, the others get a random affine warp and a random perspective warp (the reference's
kornia transforms and parameters). Averaging the CLIP distance over the copies keeps the guidance gradient
from becoming an adversarial pattern that fools CLIP without changing the picture.

Augmentation parameters come from each candidate's own random generator, so a candidate's result depends
on its seed alone, not on which other candidates share its batch.
"""

from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Sequence

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.clip import area_downsample

AFFINE_DEGREES = 15
AFFINE_TRANSLATE = 0.1
PERSPECTIVE_DISTORTION = 0.7
AUGMENT_P = 0.7


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2 * arcsin(|a - b| / 2)^2 between L2-normalised embeddings (the great-circle distance, squared)."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


class ExtendingAugmentations(nn.Module):
    """[B, C, H, W] -> [B * aug_num, C, S, S]: per image, one clean copy then aug_num - 1 warped copies.

    The warps of the whole batch run as one kornia call, each candidate's parameters drawn from its own
    generator: the same parameters, and the same pixels, as warping each candidate on its own.
    """

    def __init__(self, clip_size: int, aug_num: int = 8, p: float = AUGMENT_P) -> None:
        super().__init__()
        if aug_num < 1:
            raise ValueError(f"aug_num must be >= 1, got {aug_num}")
        self.clip_size = clip_size
        self.aug_num = aug_num
        self.warps = nn.Sequential(
            K.RandomAffine(degrees=AFFINE_DEGREES, translate=AFFINE_TRANSLATE, p=p, padding_mode="border"),
            K.RandomPerspective(PERSPECTIVE_DISTORTION, p=p),
        )
        # kornia draws on the CPU; a candidate's generator on a GPU gets a CPU twin (same seed) for that,
        # so drawing a warp seed never waits for the GPU. Weak keys: a twin lives as long as its run.
        self._cpu_twins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def forward(
        self, images: torch.Tensor, generators: Optional[Sequence[torch.Generator]] = None
    ) -> torch.Tensor:
        pooled = area_downsample(images, self.clip_size)
        if self.aug_num == 1:
            return pooled
        batch, copies = pooled.shape[0], self.aug_num - 1
        image_shape = pooled.shape[1:]
        tiled = pooled.unsqueeze(1).expand(batch, copies, *image_shape).reshape(batch * copies, *image_shape)
        warped = self._warp(tiled, None if generators is None else [self._cpu(g) for g in generators])
        views = torch.cat([pooled.unsqueeze(1), warped.view(batch, copies, *image_shape)], dim=1)
        return views.reshape(batch * self.aug_num, *image_shape)

    def _cpu(self, generator: torch.Generator) -> torch.Generator:
        if generator.device.type == "cpu":
            return generator  # the CPU's candidate generator itself: results there are as they were
        if generator not in self._cpu_twins:
            self._cpu_twins[generator] = torch.Generator().manual_seed(generator.initial_seed())
        return self._cpu_twins[generator]

    def _warp(self, batch: torch.Tensor, generators: Optional[Sequence[torch.Generator]]) -> torch.Tensor:
        with torch.autocast(device_type=batch.device.type, enabled=False):
            batch = batch.float()
            if generators is None:
                return self.warps(batch)
            per_candidate = batch.shape[0] // len(generators)
            shape = (per_candidate, *batch.shape[1:])
            drawn: List[List[Dict[str, torch.Tensor]]] = [[] for _ in self.warps]
            for generator in generators:
                # kornia draws from the global CPU generator: reseed only that one, from the candidate's
                # own generator, inside a forked state so nothing outside sees it (no GPU generator is
                # touched: torch.manual_seed would reseed every CUDA/MPS generator and never restore them)
                seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
                with torch.random.fork_rng(devices=[]):
                    torch.random.default_generator.manual_seed(seed)
                    for warp, params in zip(self.warps, drawn):
                        params.append(warp.forward_parameters(shape))
            for warp, params in zip(self.warps, drawn):
                batch = warp(batch, params=_concat_params(params, batch.shape))
            return batch


def _concat_params(params: Sequence[Dict[str, torch.Tensor]], shape: torch.Size) -> Dict[str, torch.Tensor]:
    """kornia parameters of several batches as one batch's (``forward_input_shape`` is the whole shape)."""
    joined = {key: torch.cat([p[key] for p in params]) for key in params[0] if key != "forward_input_shape"}
    joined["forward_input_shape"] = torch.tensor(tuple(shape), dtype=torch.long)
    return joined


def clip_distances(
    clip_model,
    images: torch.Tensor,
    text_embed: torch.Tensor,
    augment: Optional[ExtendingAugmentations] = None,
    generators: Optional[Sequence[torch.Generator]] = None,
) -> torch.Tensor:
    """D_CLIP of each image in [-1, 1] to the prompt embedding, averaged over its augmented copies: [B].

    Without ``augment`` the image is only pooled to the CLIP size (the ranking's unaugmented distance).
    """
    batch = images.shape[0]
    if augment is None:
        views = area_downsample(images, clip_model.image_size)
        copies = 1
    else:
        views = augment(images, generators)
        copies = augment.aug_num
    embeds = clip_model.encode_image(views.add(1).div(2)).float()
    dists = spherical_distance(embeds, text_embed.float().expand(embeds.shape[0], -1))
    return dists.view(batch, copies).mean(dim=1)
