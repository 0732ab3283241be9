"""engine.editing.shared.augment: extending augmentations (first copy clean, per-candidate randomness)
and D_CLIP."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.editing.paper.blended import make_generators
from engine.editing.shared.augment import ExtendingAugmentations, clip_distances, spherical_distance


def test_spherical_distance_values():
    a = torch.tensor([[1.0, 0.0]])
    assert spherical_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # orthogonal unit vectors: chord sqrt(2), angle pi/2, so 2 * (pi/4)^2
    assert spherical_distance(a, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2 * (math.pi / 4) ** 2)
    # opposite: 2 * (pi/2)^2; the inputs are normalised first
    assert spherical_distance(a, torch.tensor([[-5.0, 0.0]])).item() == pytest.approx(2 * (math.pi / 2) ** 2)


def test_layout_first_copy_clean_rest_warped():
    augment = ExtendingAugmentations(clip_size=16, aug_num=8)
    images = torch.rand(3, 3, 40, 40) * 2 - 1
    out = augment(images, make_generators([1, 2, 3], torch.device("cpu")))
    assert out.shape == (3 * 8, 3, 16, 16)
    pooled = F.adaptive_avg_pool2d(images, 16)
    for index in range(3):
        assert torch.equal(out[index * 8], pooled[index])
        warped = out[index * 8 + 1 : index * 8 + 8]
        changed = [(copy - pooled[index]).abs().max().item() > 1e-4 for copy in warped]
        assert any(changed)  # p = 0.7 for each of two warps: 7 clean copies by chance is ~1e-5


def test_per_candidate_randomness_ignores_batch_neighbours():
    augment = ExtendingAugmentations(clip_size=16, aug_num=4)
    images = torch.rand(2, 3, 24, 24)
    pair = augment(images, make_generators([11, 12], torch.device("cpu")))
    alone = augment(images[1:], make_generators([12], torch.device("cpu")))
    assert torch.allclose(pair[4:], alone, atol=1e-6)
    other = augment(images[1:], make_generators([13], torch.device("cpu")))
    assert not torch.allclose(alone, other)


def test_global_rng_untouched():
    augment = ExtendingAugmentations(clip_size=8, aug_num=3)
    images = torch.rand(2, 3, 8, 8)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    augment(images, make_generators([1, 2], torch.device("cpu")))
    assert torch.equal(torch.get_rng_state(), state)


class _LinearClip:
    """A stand-in CLIP: a fixed linear map of the pooled image, normalised."""

    image_size = 8

    def __init__(self):
        self.weight = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def encode_image(self, images_0_1):
        self.calls += 1
        return F.normalize(images_0_1.flatten(1) @ self.weight, dim=-1)


def test_clip_distances_average_over_copies_and_carry_gradients():
    clip = _LinearClip()
    text = F.normalize(torch.randn(1, 16), dim=-1)
    images = (torch.rand(2, 3, 20, 20) * 2 - 1).requires_grad_()
    augment = ExtendingAugmentations(clip_size=8, aug_num=5)
    distances = clip_distances(clip, images, text, augment, make_generators([1, 2], torch.device("cpu")))
    assert distances.shape == (2,)
    distances.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    plain = clip_distances(clip, images.detach(), text)  # no augmentation: pooled only
    expected = spherical_distance(
        clip.encode_image(F.adaptive_avg_pool2d(images.detach(), 8).add(1).div(2)), text
    )
    assert torch.allclose(plain, expected, atol=1e-6)
