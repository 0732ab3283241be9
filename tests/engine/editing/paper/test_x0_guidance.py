"""Issue 23: CLIP guidance on the clean estimate (``guidance_grad="x0"``), no backward through the UNet."""

import math

import pytest
import torch

from engine.editing.paper.blended import ClipGuidance, blended_diffusion
from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
from engine.editing.shared.params import EditParams
from engine.models.diffusion import GaussianDiffusion, get_named_beta_schedule, space_timesteps
from tests.engine.edit_scenes import guidance_settings, tensor_scene

RESPACING = "10"


_settings = guidance_settings


@pytest.fixture(scope="module")
def scene(loaded_tiny_models):
    loaded_tiny_models.clip.set_dtype(torch.float32)  # whatever precision an earlier job left
    return tensor_scene(loaded_tiny_models, 5, slice(6, 26), slice(8, 24), "a blue square")


def _run(models, scene, seeds, settings, skip=6, **kwargs):
    init, mask, text = scene
    guidance = ClipGuidance(models.clip, text, ExtendingAugmentations(models.clip.image_size, 4), settings)
    unet = kwargs.pop("unet", models.unet)
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


class _BackwardCounter:
    """Counts forwards under grad mode, outputs that joined a graph, and backward passes, per module tree."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.graph_outputs = self.backwards = 0
        for child in module.modules():
            child.register_forward_hook(self._on_forward)
            child.register_full_backward_hook(self._on_backward)

    def _on_forward(self, _module, _inputs, output) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        self.graph_outputs += sum(isinstance(o, torch.Tensor) and o.grad_fn is not None for o in outputs)

    def _on_backward(self, *_args) -> None:
        self.backwards += 1


@pytest.mark.parametrize("ddim", [False, True])
def test_x0_step_never_builds_a_graph_through_the_unet(tiny_models, scene, ddim):
    """No UNet activation joins a graph and no backward reaches a UNet module or parameter; CLIP's does."""
    import copy
    from types import SimpleNamespace

    unet = copy.deepcopy(tiny_models.unet)  # hooks stay off the session's shared models
    unet.requires_grad_(True)  # a backward through it would now also reach its weights
    clip = copy.deepcopy(tiny_models.clip)
    models = SimpleNamespace(unet=unet, clip=clip, diffusion=tiny_models.diffusion)
    unet_seen, clip_seen = _BackwardCounter(unet), _BackwardCounter(clip.model.visual)
    settings = _settings(guidance_grad="x0", ddim=ddim)
    out = _run(models, scene, [3, 4], settings)
    assert not out.requires_grad
    assert unet_seen.graph_outputs == 0 and unet_seen.backwards == 0
    assert all(p.grad is None for p in unet.parameters())
    assert clip_seen.graph_outputs > 0 and clip_seen.backwards > 0  # the gradient came from CLIP
    # the check can fail: the paper's gradient does run the UNet's backward
    _run(models, scene, [3], _settings(ddim=ddim))
    assert unet_seen.graph_outputs > 0 and unet_seen.backwards > 0


def test_x0_guidance_is_deterministic_guides_and_differs_from_the_paper(tiny_models, scene):
    _, mask, text = scene
    x0 = _settings(guidance_grad="x0")
    first = _run(tiny_models, scene, [21, 22], x0)
    again = _run(tiny_models, scene, [21, 22], x0)
    assert torch.equal(first, again)
    assert not torch.allclose(first, _run(tiny_models, scene, [21, 22], _settings()))
    off = _run(tiny_models, scene, [21, 22], _settings(guidance_grad="x0", clip_guidance_lambda=0))
    assert torch.all(
        clip_distances(tiny_models.clip, first * mask, text)
        < clip_distances(tiny_models.clip, off * mask, text)
    )


def test_x0_steps_are_reported_as_their_own_kind(tiny_models, scene):
    seen = []
    _run(tiny_models, scene, [1], _settings(guidance_grad="x0"), on_step=seen.append)
    assert [(s.guided, s.x0) for s in seen] == [(True, True)] * 4
    seen.clear()
    _run(tiny_models, scene, [1], _settings(), skip=8, on_step=seen.append)
    assert [(s.guided, s.x0) for s in seen] == [(True, False)] * 2


def test_unknown_guidance_grad_is_refused(tiny_models, scene):
    with pytest.raises(ValueError, match="guidance_grad must be one of unet, x0"):
        _run(tiny_models, scene, [1], _settings(guidance_grad="x_t"))


class _LinearEps(torch.nn.Module):
    """A hand-made 'UNet': eps = 0.5 x_t + 0.1 (the timestep ignored), no learned variance."""

    def forward(self, x, t, y=None):
        return 0.5 * x + 0.1


@pytest.mark.parametrize("ddim", [False, True])
def test_x0_step_equals_the_formula_on_a_hand_made_case(ddim):
    """Two steps of a 4x4 image, range loss only (its gradient by hand), mask everywhere (no blend)."""
    steps, skip, seed, lam = 20, 18, 7, 50.0
    diffusion = GaussianDiffusion(
        get_named_beta_schedule("linear", 1000), space_timesteps(1000, str(steps)), learn_sigma=False
    )
    init = torch.linspace(-1.6, 1.6, 48).reshape(1, 3, 4, 4)  # partly out of range: the range loss pushes
    mask = torch.ones(1, 1, 4, 4)
    settings = _settings(clip_guidance_lambda=0, range_lambda=lam, guidance_grad="x0", ddim=ddim)
    got = blended_diffusion(
        _LinearEps(), diffusion, init, mask, [seed], skip, settings=settings,
        guidance=ClipGuidance(object(), torch.zeros(1, 4), object(), settings),
    )  # fmt: skip

    # the reference, in float64 from the schedule's own numbers, drawing noise in the loop's order
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(3, 4, 4, generator=generator).double()  # noqa: E731
    abar = diffusion.alphas_cumprod
    t = steps - skip - 1
    x = math.sqrt(abar[t]) * init[0].double() + math.sqrt(1 - abar[t]) * draw()
    for t in range(steps - skip - 1, -1, -1):
        eps = 0.5 * x + 0.1
        x0 = (x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
        grad = lam * 2 * (x0 - x0.clamp(-1, 1)) / x0.numel()  # d/dx0 of lam * mean((x0 - clamp(x0))^2)
        x0 = x0 - (1 - abar[t]) / abar[t] * grad  # MPGD's correction, rho_t = (1 - abar) / abar
        noise = draw()
        prev = diffusion.alphas_cumprod_prev[t]
        if ddim:  # the DDIM step from the corrected x0 with the model's eps
            x = math.sqrt(prev) * x0 + math.sqrt(1 - prev) * eps
        else:  # the DDPM posterior mean from the corrected x0 and x_t, plus the fixed-large variance's noise
            mean = diffusion.posterior_mean_coef1[t] * x0 + diffusion.posterior_mean_coef2[t] * x
            x = mean + (t != 0) * math.sqrt(diffusion.fixed_large_variance[t]) * noise
        draw()  # the background's noise draw (blended away: the mask covers everything)
    assert grad.abs().max() > 1e-3  # the guidance did act
    torch.testing.assert_close(got[0].double(), x0, rtol=1e-5, atol=1e-5)


def test_cli_and_bridge_take_guidance_grad_and_refuse_a_bad_one(tmp_path, capsys):
    import argparse
    from types import SimpleNamespace

    from bridge import errors
    from bridge.protocol import Limits
    from engine.cli import edit as cli_edit
    from engine.jobs import EditRunner

    parser = argparse.ArgumentParser()
    cli_edit.add_arguments(parser)
    out = tmp_path / "out"
    argv = ["-p", "x", "-i", str(tmp_path / "a.png"), "--output_path", str(out), "--guidance_grad"]
    assert cli_edit._edit_params(parser.parse_args(argv + ["x0"])).guidance_grad == "x0"
    assert cli_edit.run(parser.parse_args(argv + ["xt"])) == 2
    assert capsys.readouterr().err.splitlines() == ["error: guidance_grad must be one of unet, x0, got 'xt'"]
    assert not out.exists()
    models = SimpleNamespace(device=torch.device("cpu"), preset="tiny", image_size=32, class_cond=False)
    runner = EditRunner(models, Limits(), {})
    assert runner.validate({"prompt": "x", "guidance_grad": "x0"}, {})["guidance_grad"] == "x0"
    with pytest.raises(errors.JobFailed, match="guidance_grad must be one of unet, x0, got 'xt'"):
        runner.validate({"prompt": "x", "guidance_grad": "xt"}, {})


def test_x0_steps_have_their_own_time_and_cost(tmp_path):
    from engine.editing import timing
    from engine.editing.paper import modes

    clock = iter([0.0, 1.0, 3.0, 3.5, 4.0]).__next__
    store = timing.StepTimes(tmp_path / "times.json")
    timer = timing.StepTimer(store, "k", clock=clock)
    timer.start()
    for guided, x0 in ((True, False), (True, False), (True, True), (False, False)):
        timer.step(guided, 1, x0=x0)
    assert timer.save() == {"guided": 2.0, "guided_x0": 0.5, "unguided": 0.5}
    times = store.get("k")
    x0 = EditParams(guidance_grad="x0", timestep_respacing="10", skip_timesteps=2)
    assert timing.candidate_seconds(x0, times) == pytest.approx(8 * 0.5)
    paper = EditParams(timestep_respacing="10", skip_timesteps=2)
    assert timing.candidate_seconds(paper, times) == pytest.approx(8 * 2.0)
    # before an x0 step was measured, the cost model's share of a guided step stands in (and of an
    # unguided one without a prompt)
    assert timing.candidate_seconds(x0, {"guided": 2.0}) == pytest.approx(8 * 2.0 * timing.X0_SHARE)
    unguided = timing.candidate_seconds(x0, {"guided": 2.0}, guided=False)
    assert unguided == pytest.approx(8 * 2.0 * timing.UNGUIDED_SHARE)
    per_step = modes.unet_equivalents(EditParams(guidance_grad="x0"), 100) / 75
    assert per_step == pytest.approx(1 + 8 * modes.CLIP_VIEW_GUIDED)  # one forward, CLIP's backward only
    assert modes.unet_equivalents(EditParams(), 100) / 75 == pytest.approx(3 + 8 * modes.CLIP_VIEW_GUIDED)
