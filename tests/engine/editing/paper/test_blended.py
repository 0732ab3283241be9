"""engine.editing.paper.blended: Algorithm 2 and the Algorithm 1 baseline on the tiny preset
(32 px, random)."""

import pytest
import torch

from engine.editing.paper.blended import ClipGuidance, blended_diffusion, range_loss
from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
from tests.engine.edit_scenes import guidance_settings, tensor_scene

RESPACING = "10"


_settings = guidance_settings


@pytest.fixture(scope="module")
def scene(loaded_tiny_models):
    loaded_tiny_models.clip.set_dtype(torch.float32)  # whatever precision an earlier job left
    return tensor_scene(loaded_tiny_models, 3, slice(8, 24), slice(6, 22), "a red ball")


class _CountingUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls = 0
        self.grad_calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        self.grad_calls += int(torch.is_grad_enabled() and x.requires_grad)
        return self.unet(x, t, y)


def _run(models, scene, seeds, settings=None, guided=True, skip=4, lpips_model=None, **kwargs):
    init, mask, text = scene
    unet = kwargs.pop("unet", models.unet)
    settings = settings or _settings()
    augment = ExtendingAugmentations(models.clip.image_size, 4)
    guidance = ClipGuidance(models.clip, text, augment, settings, lpips=lpips_model) if guided else None
    return blended_diffusion(
        unet,
        models.diffusion(RESPACING),
        init,
        mask,
        seeds,
        skip,
        settings=settings,
        guidance=guidance,
        **kwargs,
    )


def test_guidance_lowers_the_clip_loss(tiny_models, scene):
    _, mask, text = scene
    seeds = [21, 22]
    guided = _run(tiny_models, scene, seeds)
    unguided = _run(tiny_models, scene, seeds, guided=False)
    d_guided = clip_distances(tiny_models.clip, guided * mask, text)
    d_unguided = clip_distances(tiny_models.clip, unguided * mask, text)
    assert torch.all(d_guided < d_unguided), (d_guided, d_unguided)


def test_one_unet_forward_per_step_with_gradient(tiny_models, scene):
    counting = _CountingUNet(tiny_models.unet)
    _run(tiny_models, scene, [1], unet=counting, skip=6)
    steps = 10 - 6
    assert counting.calls == steps and counting.grad_calls == steps


def test_empty_prompt_never_calls_clip_nor_builds_a_graph(tiny_models, scene, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("CLIP called without a prompt")

    monkeypatch.setattr(tiny_models.clip, "encode_image", refuse)
    counting = _CountingUNet(tiny_models.unet)
    out = _run(tiny_models, scene, [1], guided=False, unet=counting, skip=7)
    assert counting.calls == 3 and counting.grad_calls == 0
    assert not out.requires_grad


def test_background_is_exact_and_blending_keeps_it_during_the_run(tiny_models, scene):
    init, mask, _ = scene
    seen = []
    out = _run(tiny_models, scene, [5], guided=False, on_step=lambda info: seen.append(info.step))
    assert seen == list(range(1, 7))
    assert torch.equal((out * (1 - mask)), (init * (1 - mask)).expand_as(out))
    assert not torch.allclose(out * mask, init * mask)


def test_algorithm_1_changes_the_background_unless_enforced(tiny_models, scene):
    init, mask, _ = scene
    keep = 1 - mask
    loose = _settings(local_clip_guided_diffusion=True, enforce_background=False)
    strict = _settings(local_clip_guided_diffusion=True, enforce_background=True)
    from engine.models.clip import get_lpips

    lpips = get_lpips("alex", torch.device("cpu"), pretrained_backbone=False)
    free = _run(tiny_models, scene, [8], loose, lpips_model=lpips, skip=6)
    pinned = _run(tiny_models, scene, [8], strict, lpips_model=lpips, skip=6)
    assert (free * keep - init * keep).abs().max() > 0.05
    assert torch.equal(pinned * keep, (init * keep).expand_as(pinned))
    # Algorithm 2 on the same seed with no final enforcement still keeps the background close: blending
    blended = _run(tiny_models, scene, [8], _settings(enforce_background=False), skip=6)
    assert (blended * keep - init * keep).abs().mean() < (free * keep - init * keep).abs().mean()


def test_ddim_path_is_deterministic_and_differs_from_ddpm(tiny_models, scene):
    ddim = _settings(ddim=True)
    first = _run(tiny_models, scene, [4], ddim, skip=7)
    again = _run(tiny_models, scene, [4], ddim, skip=7)
    ddpm = _run(tiny_models, scene, [4], _settings(), skip=7)
    assert torch.equal(first, again)
    assert not torch.allclose(first, ddpm)


def test_range_loss():
    inside = torch.zeros(2, 3, 4, 4)
    outside = torch.full((1, 3, 4, 4), 1.5)
    assert range_loss(inside).tolist() == [0.0, 0.0]
    assert range_loss(outside).item() == pytest.approx(0.25)


def test_skip_timesteps_must_leave_a_step(tiny_models, scene):
    with pytest.raises(ValueError, match="skip_timesteps"):
        _run(tiny_models, scene, [1], guided=False, skip=10)
