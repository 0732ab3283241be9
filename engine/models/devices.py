"""Choose the torch device: CUDA, then Apple MPS, then CPU; ``--device`` overrides with a clear error."""

from __future__ import annotations

import gc
from typing import List, Optional

import torch

from engine.errors import DeviceUnavailableError


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    names = []
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        names.append("mps")
    return names + ["cpu"]


def pick_device(requested: Optional[str] = None) -> torch.device:
    """``None``/"auto" picks the best available; otherwise the named device, or DeviceUnavailableError."""
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceUnavailableError(
            f"Unknown device {requested!r}. Use auto, cpu, cuda, cuda:N or mps "
            f"(available here: {', '.join(available_devices())})."
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
            )
            raise DeviceUnavailableError(
                f"Device {requested!r} is not available: {why}. "
                f"Available here: {', '.join(available_devices())}."
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"Device {requested!r} is not available: only {torch.cuda.device_count()} CUDA device(s). "
                f"Available here: {', '.join(available_devices())}."
            )
        return device
    if device.type == "mps":
        if not mps_available():
            raise DeviceUnavailableError(
                f"Device {requested!r} is not available: Apple MPS needs macOS 12.3+ on Apple silicon and a "
                f"torch build with MPS. Available here: {', '.join(available_devices())}."
            )
        return device
    raise DeviceUnavailableError(
        f"Device type {device.type!r} is not supported. Use auto, cpu, cuda, cuda:N or mps "
        f"(available here: {', '.join(available_devices())})."
    )


def amp_dtype_for(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The half dtype a job runs the UNet blocks in for this precision here; None means fp32.

    auto: half precision on CUDA (the reference runs fp16 there too; bf16 where the GPU has it), bf16 on a
    CPU with native bf16 (AVX-512 BF16 or AMX: issue 38 measured the guided ADM step 1.54x and the SD 1.5
    step 1.80x faster, the toy rows within 1.1 points), fp32 elsewhere (emulated bf16 is slower than fp32).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if has_native_bf16(device) else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def clip_dtype_for(unet_dtype: Optional[torch.dtype], device: torch.device) -> Optional[torch.dtype]:
    """CLIP's dtype beside a UNet in ``unet_dtype``: the same on a GPU, fp32 on a CPU, where ViT-B/16's eight
    views with their backward in bf16 made a guided ADM step 33.7 s against 25.3 s (issue 38, a 2-core AMD
    EPYC with AVX-512 BF16: docs/performance.md)."""
    return None if device.type == "cpu" else unet_dtype


def cpu_bf16_units() -> List[str]:
    """This CPU's bf16 hardware as torch's oneDNN sees it: "AVX-512 BF16", "AMX", both or none."""
    probes = {"AVX-512 BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    return [unit for unit, name in probes.items() if bool(getattr(torch.cpu, name, lambda: False)())]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX-512 BF16 or AMX tiles."""
    return bool(cpu_bf16_units())


def precision_choice(precision: str, device: torch.device) -> str:
    """What ``precision`` resolves to here and why, for doctor and the job's notes."""
    dtype = amp_dtype_for(precision, device)
    name = "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16")
    name = name.replace("float16", "fp16")
    if precision != "auto":
        return f"{name} (asked for)"
    if device.type == "cuda":
        why = "bf16 tensor cores" if dtype == torch.bfloat16 else "no bf16 tensor cores: fp16"
        return f"{name} on CUDA ({why})"
    if device.type == "cpu":
        if dtype is None:
            return "fp32 (this CPU has no AVX-512 BF16 or AMX: emulated bf16 is slower than fp32)"
        units = " and ".join(cpu_bf16_units()) or "native bf16"
        return f"bf16 for the UNets, CLIP in fp32 (this CPU has {units}: bf16 measured faster than fp32)"
    return f"{name} on {device.type}"


def has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: CUDA compute capability 8.0 (Ampere) and later, asked of THIS device.

    Not torch.cuda.is_bf16_supported(): it also says yes where bf16 is only emulated (T4, V100, RTX 20xx,
    GTX 16xx: slow), and it asks the thread's current device, not the job's.
    """
    if device.type != "cuda":
        return False
    major, _minor = torch.cuda.get_device_capability(device)
    return major >= 8


# Allocation failures inside cuDNN / cuBLAS surface as plain RuntimeErrors without "out of memory".
# torch's CPU allocator says "can't allocate memory" (e.g. under an address-space limit).
_OOM_MARKERS = (
    "out of memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "can't allocate memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception means the device (or the host) ran out of memory."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in message for marker in _OOM_MARKERS)


def free_memory() -> None:
    """Return Python garbage and the GPU allocator's cached blocks (after a job, a failure, a cancel)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if mps_available():
        torch.mps.empty_cache()
