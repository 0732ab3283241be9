"""Precision, torch.compile and attention kernels on the CPU (issue 17, items 6, 7 and the SDPA layout).

Each test here failed before its fix on a CPU-only machine; the GPU itself is exercised by bench/.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.editing import editor
from engine.editing.editor import edit
from tests.engine.edit_scenes import quick_params as _params
from tests.engine.edit_scenes import random_scene as _scene

# --- 6. precision: fp32 is fp32; half precision keeps the reference's fp32 layers; weights converted once ---


@pytest.fixture
def fresh_tiny(tiny_weights_dir):
    """Models of their own: these tests change the weights' dtype."""
    from engine.models.loading import load_models

    return load_models("tiny", weights_dir=tiny_weights_dir, device="cpu")


def _weight_dtypes(models) -> set:
    return {p.dtype for p in models.unet.parameters()} | {p.dtype for p in models.clip.model.parameters()}


def test_fp32_runs_fp32_weights_whatever_precision_the_models_were_left_in(fresh_tiny):
    import open_clip

    models = fresh_tiny
    exact = {k: v.clone() for k, v in models.unet.state_dict().items()}
    # what loading on CUDA did before: fp16 UNet blocks and an fp16 CLIP, whatever the job asked for
    models.unet.convert_to_fp16()
    open_clip.model.convert_weights_to_lp(models.clip.model, dtype=torch.float16)
    seen = []
    models.unet.register_forward_pre_hook(lambda module, args: seen.append(_weight_dtypes(models)))
    image, mask = _scene()
    edit(image, mask, models, _params(precision="fp32", batch_size=1))
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    for name, value in models.unet.state_dict().items():  # the UNet's own conversion is undone exactly
        assert torch.equal(value, exact[name]), name


def test_half_precision_converts_the_blocks_once_and_keeps_embedding_and_output_fp32(fresh_tiny):
    models = fresh_tiny
    exact_unet = {k: v.clone() for k, v in models.unet.state_dict().items()}
    exact_clip = {k: v.clone() for k, v in models.clip.model.state_dict().items()}
    seen = {}
    unet = models.unet
    unet.register_forward_pre_hook(
        lambda module, args: seen.update(
            autocast=torch.is_autocast_enabled("cpu"),
            block_conv=unet.input_blocks[1][0].in_layers[2].weight.dtype,
            clip=models.clip.dtype,
        )
    )
    unet.time_embed.register_forward_hook(lambda m, args, out: seen.update(time_embed=out.dtype))
    unet.out.register_forward_hook(lambda m, args, out: seen.update(out_in=args[0].dtype, out=out.dtype))
    image, mask = _scene()
    before = edit(image, mask, models, _params(precision="fp32", batch_size=1))
    result = edit(image, mask, models, _params(precision="bf16", batch_size=1))
    assert seen == {
        "autocast": False,  # no per-forward re-cast of every weight
        "block_conv": torch.bfloat16,
        "clip": torch.float32,  # on a CPU CLIP stays fp32 (bf16 ViT-B/16 ran slower here: issue 38)
        "time_embed": torch.float32,  # as the reference keeps them
        "out_in": torch.float32,
        "out": torch.float32,
    }
    assert any(note.startswith("UNet blocks ran in bfloat16") for note in result.notes)
    after = edit(image, mask, models, _params(precision="fp32", batch_size=1))
    # the same fp32 job as before the bf16 one, down to the prompt's embedding
    assert np.array_equal(np.asarray(after.candidates[0].image), np.asarray(before.candidates[0].image))
    assert _weight_dtypes(models) == {torch.float32}
    for name, value in models.unet.state_dict().items():
        assert torch.equal(value, exact_unet[name]), name
    for name, value in models.clip.model.state_dict().items():
        assert torch.equal(value, exact_clip[name]), name


def test_output_layer_and_embedding_stay_fp32_under_a_callers_autocast(tiny_models):
    unet = tiny_models.unet
    seen = {}
    hooks = [
        unet.time_embed.register_forward_hook(lambda m, args, out: seen.update(time_embed=out.dtype)),
        unet.out.register_forward_hook(lambda m, args, out: seen.update(out=out.dtype)),
    ]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            unet(torch.randn(1, 3, 32, 32), torch.tensor([500.0]))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"time_embed": torch.float32, "out": torch.float32}


# --- 7. torch.compile: kept with the models, dynamic batch, eager when compiling fails -------------------


def test_compile_failure_falls_back_to_eager_with_a_note(tiny_models, monkeypatch):
    from dataclasses import replace

    class NoTriton:
        def __call__(self, *args, **kwargs):
            raise RuntimeError(
                "Cannot find a working triton installation. Either the package is not installed"
            )

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: NoTriton())
    models = replace(tiny_models)  # the compiled state lives on this copy only
    image, mask = _scene(seed=3)
    eager = edit(image, mask, tiny_models, _params())
    compiled = edit(image, mask, models, _params(compile=True))
    assert any("torch.compile failed" in note and "triton" in note for note in compiled.notes)
    later = edit(image, mask, models, _params(compile=True))  # no second try: eager from the start
    assert any("torch.compile is unavailable" in note for note in later.notes)
    for result in (compiled, later):
        for a, b in zip(eager.candidates, result.candidates):
            assert a.seed == b.seed and np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_a_model_error_under_compile_is_not_hidden_by_the_fallback(tiny_models, monkeypatch):
    from dataclasses import replace

    import engine.editing.paper.blended

    def broken(*args, **kwargs):
        raise ValueError("a bug in the model, compiled or not")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", broken)
    models = replace(tiny_models)
    image, mask = _scene()
    with pytest.raises(ValueError, match="a bug in the model"):
        edit(image, mask, models, _params(compile=True))
    assert models.compiled_unet.error is None  # not blamed on the compiler


def test_compiled_unet_lives_with_its_models_object(tiny_models, monkeypatch):
    from dataclasses import replace

    class Compiled:
        def __init__(self, module):
            self.module = module

        def __call__(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Compiled(module))
    models = replace(tiny_models)
    image, mask = _scene()
    edit(image, mask, models, _params(compile=True, batch_size=1))
    compiled = weakref.ref(models.compiled_unet.module)
    edit(image, mask, models, _params(compile=True, batch_size=1))
    assert models.compiled_unet.module is compiled()  # one compile per models object, reused
    other = replace(tiny_models)
    edit(image, mask, other, _params(compile=True, batch_size=1))
    assert other.compiled_unet.module is not compiled()
    del models, other
    gc.collect()
    assert compiled() is None  # nothing global keeps a compiled UNet (and its weights) alive


def test_compiled_unet_keeps_one_graph_across_batch_sizes(tiny_models, monkeypatch):
    from dataclasses import replace

    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda module, **kwargs: real_compile(module, backend=counting_backend)
    )
    models = replace(tiny_models)
    torch._dynamo.reset()
    try:
        choice = editor.UNetChoice(models, _params(compile=True), [])
        counts = []
        for batch in (4, 2, 3):  # an out-of-memory split, then a smaller last batch
            x = torch.randn(batch, 3, 32, 32, requires_grad=True)
            out = choice.unet(x, torch.full((batch,), 500.0))
            torch.autograd.grad(out.sum(), x)
            counts.append(len(graphs))
        assert counts[0] >= 1 and counts[1] == counts[0] and counts[2] == counts[0], counts
    finally:
        torch._dynamo.reset()


# --- speed: attention inputs a fused SDPA kernel takes ---------------------------------------------------


def test_attention_gives_sdpa_4d_contiguous_inputs_that_a_fused_kernel_takes(tiny_models, monkeypatch):
    from engine.models import attention

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q, k, v))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        tiny_models.unet(torch.randn(2, 3, 32, 32), torch.tensor([500.0, 20.0]))
    assert seen
    for q, k, v in seen:
        assert q.dim() == 4 and all(t.is_contiguous() for t in (q, k, v))
        # the CPU says FLASH for these (it said MATH for the old 3-D transposed views)
        assert torch._fused_sdp_choice(q, k, v) != int(torch.nn.attention.SDPBackend.MATH)
