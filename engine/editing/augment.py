"""Extending augmentations and the spherical CLIP distance D_CLIP (paper section 4.2.1).

Each image is shrunk to the CLIP input size by adaptive average pooling and tiled ``aug_num`` times; the
first copy stays clean, the others get a random affine warp and a random perspective warp (the reference's
kornia transforms and parameters). Averaging the CLIP distance over the copies keeps the guidance gradient
from becoming an adversarial pattern that fools CLIP without changing the picture.

Augmentation parameters come from each candidate's own random generator, so a candidate's result depends
on its seed alone, not on which other candidates share its batch.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

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
    """[B, C, H, W] -> [B * aug_num, C, S, S]: per image, one clean copy then aug_num - 1 warped copies."""

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

    def forward(
        self, images: torch.Tensor, generators: Optional[Sequence[torch.Generator]] = None
    ) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images, (self.clip_size, self.clip_size))
        if self.aug_num == 1:
            return pooled
        copies: List[torch.Tensor] = []
        for index in range(pooled.shape[0]):
            image = pooled[index : index + 1]
            tiled = image.expand(self.aug_num - 1, -1, -1, -1)
            copies.append(image)
            copies.append(self._warp(tiled, None if generators is None else generators[index]))
        return torch.cat(copies, dim=0)

    def _warp(self, batch: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        # kornia draws its parameters from the global CPU generator: reseed it from this candidate's own
        # generator inside a forked state, so nothing outside sees the change.
        with torch.autocast(device_type=batch.device.type, enabled=False):
            batch = batch.float()
            if generator is None:
                return self.warps(batch)
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.warps(batch)


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
        views = F.adaptive_avg_pool2d(images, (clip_model.image_size, clip_model.image_size))
        copies = 1
    else:
        views = augment(images, generators)
        copies = augment.aug_num
    embeds = clip_model.encode_image(views.add(1).div(2)).float()
    dists = spherical_distance(embeds, text_embed.float().expand(embeds.shape[0], -1))
    return dists.view(batch, copies).mean(dim=1)
