"""Device paths checked on the CPU (issue 17): what would break or slow down on Apple MPS and CUDA.

Each test here failed before its fix on a CPU-only machine; the GPU itself is exercised by bench/.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.overrides import TorchFunctionMode

from engine.editing import editor
from engine.editing.editor import EditParams, edit
from engine.models import devices
from engine.models.diffusion import diffusion_from_flags

FAST = dict(timestep_respacing="10", skip_timesteps=6, aug_num=3, batch_size=2, iterations_num=1)


def _params(**overrides) -> EditParams:
    return EditParams(**{"prompt": "a red ball", **FAST, **overrides})


def _scene(size: int = 36, seed: int = 5):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return image, Image.fromarray(mask)


# --- 1. no float64 tensor on a device (Apple MPS has none) -----------------------------------------------


class Float64OffCpu(TorchFunctionMode):
    """Records every torch call that takes or makes a float64 tensor on a device other than the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        values = list(args) + list((kwargs or {}).values()) + [result]
        for value in values:
            if (
                isinstance(value, torch.Tensor)
                and value.dtype == torch.float64
                and value.device.type != "cpu"
            ):
                self.calls.append(getattr(func, "__name__", str(func)))
        return result


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_no_float64_tensor_reaches_a_device_in_any_diffusion_step(learn_sigma):
    # The meta device stands in for MPS: tensors there carry a dtype and a device but no data.
    diffusion = diffusion_from_flags(
        {
            "diffusion_steps": 1000,
            "learn_sigma": learn_sigma,
            "timestep_respacing": "20",
            "rescale_timesteps": True,
        }
    )
    meta = torch.device("meta")
    x = torch.empty(2, 3, 8, 8, device=meta)
    t = torch.full((2,), 7, device=meta, dtype=torch.long)
    output = torch.empty(2, 6 if learn_sigma else 3, 8, 8, device=meta)
    with Float64OffCpu() as spy:
        diffusion.q_sample(x, t, noise=torch.empty_like(x))
        assert diffusion.model_timesteps(t).dtype == torch.float32
        out = diffusion.p_mean_variance(None, x, t, model_output=output)
        diffusion.ddpm_step(out, x, t, gradient=torch.empty_like(x), noise=torch.empty_like(x))
        diffusion.ddim_step(out, x, t, gradient=torch.empty_like(x), eta=0.5, noise=torch.empty_like(x))
    assert spy.calls == []


def test_schedule_tables_are_made_once_per_device_and_equal_the_float64_gather():
    diffusion = diffusion_from_flags(
        {"diffusion_steps": 1000, "learn_sigma": True, "timestep_respacing": "25"}
    )
    first = diffusion.table("sqrt_alphas_cumprod", "cpu")
    assert first.dtype == torch.float32
    assert diffusion.table("sqrt_alphas_cumprod", torch.device("cpu")) is first
    t = torch.tensor([0, 5, 24])
    expected = torch.from_numpy(diffusion.sqrt_alphas_cumprod)[t].float()  # the old gather-then-cast
    assert torch.equal(first[t], expected)


# --- 2. pooling to CLIP's size that runs on every device -------------------------------------------------


@pytest.mark.parametrize(
    "shape,size", [((256, 256), 224), ((512, 512), 224), ((300, 256), 224), ((100, 41), 37)]
)
def test_matrix_pooling_equals_adaptive_pooling_with_gradients(shape, size):
    from engine.models.clip import area_downsample

    generator = torch.Generator().manual_seed(1)
    x64 = torch.rand(2, 3, *shape, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.rand(2, 3, size, size, dtype=torch.float64, generator=generator)
    expected = F.adaptive_avg_pool2d(x64, (size, size))
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x64)
    got = area_downsample(x64, size, method="matrix")
    (got_grad,) = torch.autograd.grad((got * weights).sum(), x64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-14)
    x32 = x64.detach().float()
    difference = (
        area_downsample(x32, size, method="matrix") - F.adaptive_avg_pool2d(x32, (size, size))
    ).abs()
    assert difference.max() < 1e-6


def test_pooling_takes_the_matrix_path_where_adaptive_pooling_is_missing(monkeypatch):
    from engine.models import clip as clip_module

    assert clip_module.pool_method(torch.device("mps")) == "matrix"
    assert clip_module.pool_method(torch.device("cuda", 1)) == "adaptive"
    assert clip_module.pool_method(torch.device("cpu")) == "adaptive"
    calls = []
    original = F.adaptive_avg_pool2d
    monkeypatch.setattr(
        clip_module.F, "adaptive_avg_pool2d", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    x = torch.rand(1, 3, 64, 64)
    clip_module.area_downsample(x, 56)
    assert len(calls) == 1  # CPU (and CUDA): torch's own op, the reference's, so results there are unchanged
    monkeypatch.setattr(clip_module, "pool_method", lambda device: "matrix")
    clip_module.area_downsample(x, 56)
    assert len(calls) == 1
    assert clip_module.area_downsample(x, 64) is x  # nothing to do at the CLIP size (the 32 px presets)


# --- 3. bf16 only where the job's GPU has it natively ----------------------------------------------------


@pytest.mark.parametrize(
    "capability,expected",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_auto_precision_follows_the_compute_capability_of_the_jobs_device(monkeypatch, capability, expected):
    asked = []

    def capability_of(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    # torch says yes to bf16 on a T4 too (emulated): that must not decide
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    job_device = torch.device("cuda", 1)
    assert devices.amp_dtype_for("auto", job_device) is expected
    assert asked and all(torch.device(d) == job_device for d in asked)
    assert devices.amp_dtype_for("fp32", job_device) is None
    assert devices.amp_dtype_for("bf16", job_device) is torch.bfloat16  # asked for explicitly: as asked
    assert devices.amp_dtype_for("auto", torch.device("cpu")) is None


# --- 5 (part). what counts as out of memory; freeing memory on every backend -----------------------------


def test_cudnn_and_cublas_allocation_failures_count_as_out_of_memory():
    assert devices.is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert devices.is_out_of_memory(
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    )
    assert devices.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert devices.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devices.is_out_of_memory(MemoryError())
    assert not devices.is_out_of_memory(RuntimeError("CUDNN_STATUS_BAD_PARAM"))
    assert not devices.is_out_of_memory(ValueError("out of memory"))  # only runtime failures


def test_free_memory_empties_the_mps_cache_too(monkeypatch):
    emptied = []
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append("mps"))
    devices.free_memory()
    assert emptied == ["mps"]


# --- 4. an edit never reseeds the global (GPU) generators ------------------------------------------------


def test_an_edit_never_reseeds_any_global_generator(tiny_models, monkeypatch):
    calls = []
    for module, name in (
        (torch, "manual_seed"),
        (torch, "seed"),
        (torch.cuda, "manual_seed_all"),
        (torch.cuda, "manual_seed"),
        (torch.mps, "manual_seed"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: calls.append(_name))
    cpu_state = torch.random.get_rng_state()
    image, mask = _scene()
    result = edit(image, mask, tiny_models, _params())
    assert len(result.candidates) == 2
    assert calls == []
    assert torch.equal(torch.random.get_rng_state(), cpu_state)  # the CPU generator is restored as well


def test_batched_warps_draw_each_candidates_own_parameters():
    from engine.editing.augment import ExtendingAugmentations

    torch.manual_seed(0)
    augment = ExtendingAugmentations(24, aug_num=5)
    images = torch.rand(3, 3, 40, 40)

    def generators(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    together = augment(images, generators([10, 11, 12]))
    alone = torch.cat([augment(images[i : i + 1], generators([10 + i])) for i in range(3)])
    assert torch.equal(together, alone)  # bit for bit: one kornia call, each candidate's own draws
    assert not torch.equal(together[1:5], together[6:10])


def test_warp_seeds_come_from_a_cpu_generator_for_a_gpu_candidate():
    from engine.editing.augment import ExtendingAugmentations

    class CudaGenerator:  # what a candidate's generator on a GPU offers: its device and its seed
        device = torch.device("cuda")

        def initial_seed(self) -> int:
            return 77

    augment = ExtendingAugmentations(16, aug_num=3)
    device_generator = CudaGenerator()
    twin = augment._cpu(device_generator)
    assert twin.device.type == "cpu" and twin.initial_seed() == 77
    assert augment._cpu(device_generator) is twin  # one twin per run: its draws go on from step to step
    cpu_generator = torch.Generator().manual_seed(5)
    assert augment._cpu(cpu_generator) is cpu_generator
    del device_generator
    gc.collect()
    assert len(augment._cpu_twins) == 0


# --- 5. out of memory: the batch size that worked is kept, progress only grows ---------------------------


def test_out_of_memory_mid_run_keeps_the_smaller_batch_and_progress_never_goes_back(tiny_models, monkeypatch):
    import engine.editing.blended

    image, mask = _scene(seed=8)
    params = _params(batch_size=4, iterations_num=2, skip_timesteps=7)  # 3 steps, 8 candidates
    reference = edit(image, mask, tiny_models, params)
    real = engine.editing.blended.blended_diffusion
    sizes = []

    def failing_after_two_steps(unet, diffusion, init, mask_, seeds, *args, **kwargs):
        sizes.append(len(seeds))
        if len(seeds) > 2:
            report = kwargs["on_step"]

            def on_step(info):
                report(info)
                if info.step == 2:  # memory runs out mid-run, after progress was shown
                    raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")

            kwargs = {**kwargs, "on_step": on_step}
        return real(unet, diffusion, init, mask_, seeds, *args, **kwargs)

    monkeypatch.setattr(engine.editing.blended, "blended_diffusion", failing_after_two_steps)
    reports = []
    split = edit(image, mask, tiny_models, params, progress=reports.append)
    assert sizes == [4, 2, 2, 2, 2]  # not 4, 2, 2, 4, 2, 2: the second iteration starts at 2
    steps = [r.step for r in reports]
    assert steps == sorted(set(steps)), steps  # strictly growing, also across the rerun
    assert steps[-1] == reports[-1].total == 3 * 8
    assert len([note for note in split.notes if "out of memory" in note]) == 1
    by_seed = {c.seed: np.asarray(c.image).astype(int) for c in reference.candidates}
    assert sorted(by_seed) == sorted(c.seed for c in split.candidates)
    for candidate in split.candidates:
        assert np.abs(np.asarray(candidate.image).astype(int) - by_seed[candidate.seed]).max() <= 2


def test_run_splitting_on_oom_frees_memory_and_halves_down_to_one(monkeypatch):
    freed = []
    monkeypatch.setattr(editor, "free_memory", lambda: freed.append(True))
    calls = []

    def run(seeds, offset):
        calls.append((list(seeds), offset))
        if len(seeds) > 1:
            raise torch.OutOfMemoryError("out of memory")
        return torch.tensor([float(seeds[0])])

    limit = editor.BatchLimit(4)
    notes = []
    first = editor.run_splitting_on_oom(run, [10, 11, 12, 13], 0, notes, limit)
    second = editor.run_splitting_on_oom(run, [14, 15, 16, 17], 4, notes, limit)
    assert first.tolist() == [10, 11, 12, 13] and second.tolist() == [14, 15, 16, 17]
    assert [len(seeds) for seeds, _ in calls] == [4, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [offset for _, offset in calls[-4:]] == [4, 5, 6, 7]
    assert limit.size == 1 and len(freed) == 2 and len(notes) == 2


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
        "clip": torch.bfloat16,
        "time_embed": torch.float32,  # as the reference keeps them
        "out_in": torch.float32,
        "out": torch.float32,
    }
    assert any("ran in bfloat16" in note for note in result.notes)
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

    import engine.editing.blended

    def broken(*args, **kwargs):
        raise ValueError("a bug in the model, compiled or not")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    monkeypatch.setattr(engine.editing.blended, "blended_diffusion", broken)
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


class Float64Results(TorchFunctionMode):
    """Records every torch call whose result is a float64 tensor (on any device)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and result.dtype == torch.float64:
            self.calls.append(getattr(func, "__name__", str(func)))
        return result


def test_a_whole_edit_makes_no_float64_tensor(tiny_models):
    # Whatever an edit makes in float64 would be made on the job's device, and MPS has no float64.
    import engine.editing.augment  # noqa: F401 - kornia makes float64 constants when it is imported
    import engine.editing.blended  # noqa: F401

    image, mask = _scene(seed=2)
    with Float64Results() as spy:
        edit(image, mask, tiny_models, _params(batch_size=1))
        edit(image, mask, tiny_models, _params(batch_size=1, ddim=True, prompt=""))
    assert spy.calls == []
