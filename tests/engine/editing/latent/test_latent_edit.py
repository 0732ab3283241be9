"""latent_edit() in process on the shipped ``toy-latent`` models, through the job runner it shares with the
paper's edit (running.JobRun): out-of-memory splits a batch and makes the same candidates, progress never
goes back across the rerun, and a single candidate that does not fit is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine.editing.latent.blended_latent as bld
from engine.editing.editor import edit
from engine.editing.shared.params import EditParams
from engine.errors import EngineError
from tests.engine.edit_scenes import shape_scene


@pytest.fixture(scope="module")
def toy_latent():
    from engine.models.loading import load_models

    return load_models("toy-latent", None, "cpu")


def _params(**values) -> EditParams:
    base = dict(prompt="a red circle", timestep_respacing="10", skip_timesteps=6, seed=31, iterations_num=1)
    return EditParams(**{**base, **values})


def test_out_of_memory_splits_the_latent_batch_and_gives_the_same_candidates(toy_latent, monkeypatch):
    image, mask = shape_scene()
    params = _params(batch_size=4, iterations_num=2)  # 4 steps, 8 candidates
    reference = edit(image, mask, toy_latent, params)
    real = bld.blended_latent_diffusion
    sizes = []

    def fake_oom(unet, scheduler, source, masks, seeds, **kwargs):
        sizes.append(len(seeds))
        if len(seeds) > 2:
            report = kwargs["on_step"]

            def on_step(info):
                report(info)
                if info.step == 2:  # memory runs out mid-run, after progress was shown
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            kwargs = {**kwargs, "on_step": on_step}
        return real(unet, scheduler, source, masks, seeds, **kwargs)

    monkeypatch.setattr(bld, "blended_latent_diffusion", fake_oom)
    reports = []
    split = edit(image, mask, toy_latent, params, progress=reports.append)
    assert sizes == [4, 2, 2, 2, 2]  # the size that worked is kept for the second batch too
    assert len([note for note in split.notes if "out of memory with 4 candidates" in note]) == 1
    steps = [r.step for r in reports]
    assert steps == sorted(set(steps)) and steps[-1] == reports[-1].total == 4 * 8  # never back
    by_seed = {c.seed: np.asarray(c.image) for c in reference.candidates}
    assert sorted(by_seed) == sorted(c.seed for c in split.candidates) == list(range(31, 39))
    for candidate in split.candidates:  # each candidate is its seed's, however batched
        assert np.array_equal(np.asarray(candidate.image), by_seed[candidate.seed])

    def always_oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(bld, "blended_latent_diffusion", always_oom)
    with pytest.raises(EngineError, match="out of memory even for a single candidate"):
        edit(image, mask, toy_latent, _params(batch_size=2))


def test_bf16_runs_the_latent_unet_under_autocast_and_auto_follows_the_cpu(toy_latent, monkeypatch):
    from engine.models import devices

    seen = []
    hook = toy_latent.unet.register_forward_pre_hook(
        lambda module, args: seen.append(torch.is_autocast_enabled("cpu"))
    )
    image, mask = shape_scene()
    try:
        full = edit(image, mask, toy_latent, _params(precision="fp32", batch_size=1))
        assert seen and not any(seen)
        seen.clear()
        half = edit(image, mask, toy_latent, _params(precision="bf16", batch_size=1))
        assert seen and all(seen)
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
        auto_plain = edit(image, mask, toy_latent, _params(batch_size=1))
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
        auto_native = edit(image, mask, toy_latent, _params(batch_size=1))
    finally:
        hook.remove()
    assert "the UNet under bfloat16 autocast" in half.notes[-1]  # the loop's summary says so
    assert not any("autocast" in note for note in full.notes)
    assert {p.dtype for p in toy_latent.unet.parameters()} == {torch.float32}  # weights left as they were

    def pixels(result):
        return np.asarray(result.candidates[0].image).astype(int)

    assert np.array_equal(pixels(auto_plain), pixels(full))  # auto is fp32 where bf16 is emulated
    assert np.array_equal(pixels(auto_native), pixels(half))  # and bf16 where the CPU has it
    difference, inside = np.abs(pixels(half) - pixels(full)), np.asarray(mask) > 0
    assert difference.max() > 0  # bf16 really ran
    assert difference[inside].mean() < 8  # ... and drew the same picture (a few levels apart)
    assert not difference[~inside].any()  # outside the selection the source, in either precision


def test_autocast_unet_hands_back_an_fp32_prediction():
    from types import SimpleNamespace

    from engine.editing.shared.running import AutocastUNet

    layer = torch.nn.Linear(4, 4)

    def unet(x):
        return SimpleNamespace(sample=layer(x))

    wrapped = AutocastUNet(unet, torch.bfloat16, layer)
    x = torch.randn(2, 4)
    output = wrapped(x).sample
    assert output.dtype == torch.float32 and layer.weight.dtype == torch.float32
    assert not torch.equal(output, layer(x))  # the matmul ran in bf16 ...
    assert torch.allclose(output, layer(x), rtol=0.05, atol=0.05)  # ... close to fp32
    assert list(wrapped.parameters()) == list(layer.parameters())
