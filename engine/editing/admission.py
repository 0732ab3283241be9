"""Admission by estimate: before a job is queued, its peak memory and its time are estimated; a job that
cannot fit the device's free memory even one candidate at a time is refused with the figures, one that fits
only in smaller batches runs in those, and one over the engine's time cap (``serve --max-job-seconds``)
is refused likewise.

Peak memory of a guided step = the loaded weights + per candidate run at once (the UNet's activations kept
for the backward pass, plus each augmented view's through CLIP's image encoder) + the images on the host.
The activations are counted, not guessed: one forward of the preset's own architecture runs on fake
tensors (no memory, milliseconds) and every tensor autograd saves for the backward is summed
(:func:`footprint`); :data:`OVERHEAD` and :data:`STEP_OVERHEAD` cover what that count leaves out (the
backward's own temporaries, allocator arenas), measured by bench/admission.py against this CPU's peak
resident memory for the toy, tiny and default presets (docs/limits.md has the figures). The time comes
from the step times this device measured (engine/editing/timing.py); before the first job there is none,
and only memory is checked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from engine.errors import EngineError

log = logging.getLogger("engine.admission")

GB = 1e9
# Peak over the counted activations in a guided step (bench/admission.py, docs/limits.md).
OVERHEAD = 1.25
# What a job's first guided step takes beyond the counted activations whatever the model (autograd's
# engine, the allocator's arenas): 31-39 MB measured with the toy and tiny presets.
STEP_OVERHEAD = 40_000_000
# An unguided step (no prompt) keeps no graph: its peak is a fraction of the guided step's activations
# (ADM-256: 0.93 GB measured at batch 1 against 5.16 GB counted, bench/admission.py --unguided).
UNGUIDED_SHARE = 0.15
# Host bytes per image pixel an edit keeps (decoded PNGs, RGB + mask + full-size source, the composite's
# plan) and an extension per canvas pixel (start canvas, masks) and per canvas pixel and candidate (its
# canvas, its full image and its RGBA patch).
EDIT_BYTES_PER_PIXEL = 16
EXTEND_BYTES_PER_PIXEL = 8
EXTEND_BYTES_PER_PIXEL_CANDIDATE = 11
# Device bytes per pixel of the box the detail stage re-samples (engine/editing/paper/detail.py), counted from
# its tensors at the box's resolution (fp32): source, mask, coverage, x_t, its start, three noise draws,
# the fused prediction (6 channels with learned variances), the step's mean, variance, log-variance,
# pred_x0 and sample, the noised source: about 45 floats; not measured.
DETAIL_BYTES_PER_BOX_PIXEL = 4 * 45


class AdmissionError(EngineError):
    """The job does not fit this engine (memory or time): the message has the figures."""

    code = "too_large"


@dataclass(frozen=True)
class Footprint:
    """A preset's memory per job part, in bytes (fp32)."""

    weights: int  # UNet + CLIP parameters as loaded
    unet_activations: int  # saved for the backward by one UNet forward of one candidate
    clip_view_activations: int  # ... by CLIP's image encoder for one augmented view


def _saved_bytes(run: Any, parameters: Any) -> int:
    import torch

    def key(tensor: Any) -> int:  # one count per storage: views and re-saved tensors share theirs
        return tensor.untyped_storage()._cdata

    skip = {key(p) for p in parameters}
    total = [0]

    def pack(tensor: Any) -> Any:
        if key(tensor) not in skip:
            skip.add(key(tensor))
            total[0] += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total[0]


def count_activations(model_flags: Dict[str, Any], clip_config: Dict[str, Any]) -> Tuple[int, int]:
    """(UNet, CLIP view) bytes autograd saves for one candidate's guided step, on fake tensors."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from engine.models.clip import build_open_clip
    from engine.models.unet import unet_from_flags

    size = int(model_flags["image_size"])
    clip_size = int(clip_config["vision_cfg"]["image_size"])
    with FakeTensorMode():
        unet = unet_from_flags(model_flags).eval().requires_grad_(False)
        clip = build_open_clip(clip_config).eval().requires_grad_(False)
        x = torch.empty(1, 3, size, size, requires_grad=True)
        steps = torch.zeros(1, dtype=torch.long)
        labels = torch.zeros(1, dtype=torch.long) if model_flags.get("class_cond") else None
        unet_bytes = _saved_bytes(lambda: unet(x, steps, labels), list(unet.parameters()))
        view = torch.empty(1, 3, clip_size, clip_size, requires_grad=True)
        clip_bytes = _saved_bytes(lambda: clip.encode_image(view), list(clip.parameters()))
    return unet_bytes, clip_bytes


def footprint(models: Any) -> Footprint:
    """The models' footprint, counted once and kept on them."""
    known = getattr(models, "_footprint", None)
    if known is not None:
        return known
    clip = getattr(models, "clip", None)
    modules = [getattr(models, "unet", None), getattr(clip, "model", None)]
    # a latent preset's other networks (engine.models.latent.LatentModels) are loaded weights too
    modules += [getattr(models, name, None) for name in ("vae", "text_encoder", "text_encoder_2")]
    weights = sum(
        p.numel() * p.element_size() for module in modules if module is not None for p in module.parameters()
    )
    try:
        unet_bytes, clip_bytes = count_activations(models.model_flags, clip.config)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - a model fake tensors cannot run: admit by the images alone
        log.warning("activations not counted: memory admission by the images alone", exc_info=True)
        unet_bytes = clip_bytes = 0
    known = Footprint(weights, unet_bytes, clip_bytes)
    try:
        models._footprint = known
    except AttributeError:
        pass
    return known


def candidate_bytes(
    fp: Footprint, aug_num: int, guided: bool, precision_bytes: int = 4, clip_precision_bytes: int = 0
) -> float:
    """Peak device bytes one candidate run at once adds (CLIP's views in ``clip_precision_bytes``, 0: the
    UNet's)."""
    scale = precision_bytes / 4.0
    if not guided:
        return OVERHEAD * UNGUIDED_SHARE * fp.unet_activations * scale
    clip_scale = (clip_precision_bytes or precision_bytes) / 4.0
    return OVERHEAD * (fp.unet_activations * scale + int(aug_num) * fp.clip_view_activations * clip_scale)


def host_bytes(image_pixels: int, canvas_pixels: int = 0, candidates: int = 0) -> int:
    """Bytes the images of a job keep on the host (edit: the image; extend: the canvas per candidate)."""
    if canvas_pixels:
        return canvas_pixels * (EXTEND_BYTES_PER_PIXEL + EXTEND_BYTES_PER_PIXEL_CANDIDATE * candidates)
    return image_pixels * EDIT_BYTES_PER_PIXEL


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> Optional[int]:
    """What an address-space limit (RLIMIT_AS) still allows this process, None without one."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_free_bytes() -> Optional[int]:
    """Memory this process can still take on the host: available RAM, within an address-space limit."""
    figures = [value for value in (_meminfo_available(), _address_space_left()) if value is not None]
    return min(figures) if figures else None


def device_free_bytes(device: Any) -> Tuple[Optional[int], str]:
    """(bytes the device can still give a job, its name for a message); None: unknown (not checked)."""
    import torch

    name = str(device)
    if name.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(name))
        cached = torch.cuda.memory_reserved(torch.device(name)) - torch.cuda.memory_allocated(
            torch.device(name)
        )
        return free + cached, "the GPU"
    if name == "mps":
        try:
            return torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory(), "the GPU"
        except (AttributeError, RuntimeError):
            return None, "the GPU"
    return host_free_bytes(), "this machine"


@dataclass
class Admission:
    batch_size: int  # candidates at once that fit (<= the one asked for)
    need_bytes: float  # peak estimate at that batch, models included
    free_bytes: Optional[float]
    seconds: Optional[float]


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB" if value >= 0.1 * GB else f"{value / 1e6:.0f} MB"


def admit(
    models: Any,
    params: Any,
    image_pixels: int,
    canvas_pixels: int = 0,
    windows: int = 1,
    seconds: Optional[float] = None,
    max_seconds: Optional[float] = None,
    free: Optional[Tuple[Optional[int], str]] = None,
    detail: Optional[Tuple[int, int]] = None,
    detail_seconds: float = 0.0,
) -> Admission:
    """The batch this job runs in, or AdmissionError with the figures. ``seconds``: the time estimate of
    one window (the timing module's), None when this device has not measured its step times yet.
    ``detail``: (tile-steps, box pixels) of the full-resolution detail stage when it will run
    (detail.planned_work), ``detail_seconds`` its time (detail.work_seconds), added to the first pass's."""
    from engine.editing.paper.detail import TILES_PER_CANDIDATE
    from engine.editing.shared.params import EditParams
    from engine.models.devices import amp_dtype_for, clip_dtype_for

    assert isinstance(params, EditParams)
    fp = footprint(models)
    guided = bool(str(params.prompt).strip())
    unet_dtype = amp_dtype_for(params.precision, models.device)
    precision_bytes = 4 if unet_dtype is None else 2
    clip_bytes = 4 if clip_dtype_for(unet_dtype, models.device) is None else 2  # fp32 on a CPU
    per_candidate = candidate_bytes(fp, int(params.aug_num), guided, precision_bytes, clip_bytes)
    detail_tiles, box_pixels = detail if detail and detail[0] else (0, 0)
    if detail_tiles:
        # The stage runs after the first pass has freed its batch, in batches of TILES_PER_CANDIDATE tiles
        # per candidate of batch_size, each a forward without gradient (UNGUIDED_SHARE of the
        # activations): 4 x 0.15 = 0.6 of one guided candidate's UNet activations before its CLIP views
        # (ADM-256, counted: 3.9 GB against 7.5 GB at aug_num 8), so never more than the first pass's
        # when guided; without a prompt it is 4x an unguided candidate, and the larger of the two counts.
        tile_batch = TILES_PER_CANDIDATE * candidate_bytes(fp, 0, False, precision_bytes)
        per_candidate = max(per_candidate, tile_batch)
    candidates = int(params.batch_size) * int(params.iterations_num)
    host = host_bytes(image_pixels, canvas_pixels, candidates)
    free_bytes, where = free if free is not None else device_free_bytes(models.device)
    on_host = where == "this machine"
    # the weights are loaded already: they are not asked of the device
    fixed = STEP_OVERHEAD + (host if on_host else 0) + DETAIL_BYTES_PER_BOX_PIXEL * box_pixels
    batch = int(params.batch_size)
    if free_bytes is not None:
        while batch > 1 and fixed + batch * per_candidate > free_bytes:
            batch -= 1
        if fixed + batch * per_candidate > free_bytes:
            need = fp.weights + fixed + per_candidate
            raise AdmissionError(
                f"this job needs about {_gb(need)} even one candidate at a time (models {_gb(fp.weights)}, "
                f"loaded; {_gb(per_candidate)} per candidate at once"
                + (f"; {_gb(host)} for the images" if on_host and host > 0.05 * GB else "")
                + f"), {where} has {_gb(free_bytes)} free: use a smaller image or selection, fewer "
                "augmentations (aug_num) or a smaller model preset"
            )
    host_free = None if on_host else host_free_bytes()
    if host_free is not None and host > host_free:  # a GPU job's images still live on the host
        raise AdmissionError(
            f"the images of this job need about {_gb(host)} on the host, this machine has {_gb(host_free)} "
            "free: use a smaller image or canvas, or fewer candidates"
        )
    total = None if seconds is None else seconds * max(1, int(windows)) + detail_seconds
    if max_seconds is not None and total is not None and total > max_seconds:
        from engine.editing.timing import describe_seconds

        stage = (
            f" ({describe_seconds(detail_seconds)} of it the full-resolution detail stage)"
            if detail_seconds
            else ""
        )
        raise AdmissionError(
            f"this job would take {describe_seconds(total)}{stage} by this engine's measured speed, over "
            f"its limit of {describe_seconds(max_seconds)} per job (max_job_seconds): ask for fewer "
            "candidates or steps" + (", or turn the detail stage off" if detail_seconds else "")
        )
    return Admission(batch, fp.weights + fixed + batch * per_candidate, free_bytes, total)


def split_batch(params: Any, batch: int) -> Any:
    """``params`` running at most ``batch`` candidates at once, with the same candidates (seeds): the
    largest divisor of the count not over ``batch`` becomes the batch size."""
    count = int(params.batch_size) * int(params.iterations_num)
    size = max(d for d in range(1, max(1, batch) + 1) if count % d == 0)
    return dataclasses.replace(params, batch_size=size, iterations_num=count // size)


__all__ = ["Admission", "AdmissionError", "Footprint", "admit", "footprint", "split_batch"]
