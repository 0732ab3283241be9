"""Choose the torch device: CUDA, then Apple MPS, then CPU; ``--device`` overrides with a clear error."""

from __future__ import annotations

import gc
from typing import Optional

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
    """The half dtype a job runs the UNet blocks and CLIP in for this precision here; None means fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    # auto: half precision pays on CUDA (the reference runs fp16 there too); elsewhere stay in fp32
    if device.type != "cuda":
        return None
    return torch.bfloat16 if has_native_bf16(device) else torch.float16


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
