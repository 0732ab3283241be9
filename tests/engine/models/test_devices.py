"""Device paths checked on the CPU (issue 17, items 1-5): what would break or slow down on MPS and CUDA.

Each test here failed before its fix on a CPU-only machine, except two guards that say so; the GPU itself
is exercised by bench/.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from engine.editing.editor import edit
from engine.editing.shared import running
from engine.models import devices
from engine.models.diffusion import diffusion_from_flags
from tests.engine.edit_scenes import quick_params as _params
from tests.engine.edit_scenes import random_scene as _scene

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


def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_bf16_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.amp_dtype_for("auto", cpu) is None
    assert devices.precision_choice("auto", cpu).startswith("fp32 (this CPU has no AVX-512 BF16 or AMX")
    assert devices.amp_dtype_for("bf16", cpu) is torch.bfloat16  # asked for: as asked, even emulated
    assert devices.precision_choice("bf16", cpu) == "bf16 (asked for)"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.amp_dtype_for("auto", cpu) is torch.bfloat16
    assert devices.amp_dtype_for("fp32", cpu) is None
    assert "CLIP in fp32" in devices.precision_choice("auto", cpu)
    # CLIP stays fp32 beside a bf16 UNet on a CPU, follows the UNet on a GPU
    assert devices.clip_dtype_for(torch.bfloat16, cpu) is None
    assert devices.clip_dtype_for(torch.float16, torch.device("cuda", 0)) is torch.float16


def test_native_bf16_is_what_torch_reports_for_avx512_bf16_or_amx(monkeypatch):
    for avx512, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert devices.cpu_has_native_bf16() is expected
        assert devices.cpu_bf16_units() == ["AVX-512 BF16"] * avx512 + ["AMX"] * amx
    # a torch without the probes: fp32, not an error
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert devices.cpu_has_native_bf16() is False


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
    # a guard: the layout change (issue 11) already added the MPS cache to free_memory
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
    # a guard (it held for the per-candidate loop too): batching must not mix candidates' draws
    from engine.editing.shared.augment import ExtendingAugmentations

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
    from engine.editing.shared.augment import ExtendingAugmentations

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
    import engine.editing.paper.blended

    image, mask = _scene(seed=8)
    params = _params(batch_size=4, iterations_num=2, skip_timesteps=7)  # 3 steps, 8 candidates
    reference = edit(image, mask, tiny_models, params)
    real = engine.editing.paper.blended.blended_diffusion
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

    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", failing_after_two_steps)
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
    monkeypatch.setattr(running, "free_memory", lambda: freed.append(True))
    calls = []

    def run(seeds, offset):
        calls.append((list(seeds), offset))
        if len(seeds) > 1:
            raise torch.OutOfMemoryError("out of memory")
        return torch.tensor([float(seeds[0])])

    limit = running.BatchLimit(4)
    notes = []
    first = running.run_splitting_on_oom(run, [10, 11, 12, 13], 0, notes, limit)
    second = running.run_splitting_on_oom(run, [14, 15, 16, 17], 4, notes, limit)
    assert first.tolist() == [10, 11, 12, 13] and second.tolist() == [14, 15, 16, 17]
    assert [len(seeds) for seeds, _ in calls] == [4, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [offset for _, offset in calls[-4:]] == [4, 5, 6, 7]
    assert limit.size == 1 and len(freed) == 2 and len(notes) == 2


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
    import engine.editing.paper.blended  # noqa: F401
    import engine.editing.shared.augment  # noqa: F401 - kornia makes float64 constants when it is imported

    image, mask = _scene(seed=2)
    with Float64Results() as spy:
        edit(image, mask, tiny_models, _params(batch_size=1))
        edit(image, mask, tiny_models, _params(batch_size=1, ddim=True, prompt=""))
    assert spy.calls == []
