"""What a user (or the plugin's "Check engine") needs to know when something does not work: the engine's
Python and package versions, the device and its memory, the preset and the state of each weight file, the
estimated time of a default edit, and where the log is.

``report()`` returns plain JSON-able data; ``format_report()`` the text ``python -m engine doctor`` prints.
The same data travels in the server's ``status`` reply (``doctor``), so the plugin shows it for a local and
a remote engine alike. Torch is imported only for the device part, and nothing here loads a model.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional

PACKAGES = ("torch", "open_clip_torch", "kornia", "lpips", "numpy", "pillow", "tqdm")
STATE_TEXT = {
    "ok": "present, SHA-256 verified",
    "missing": "MISSING",
    "partial": "partly downloaded",
    "truncated": "TRUNCATED",
    "corrupt": "CORRUPT",
    "unrecorded": "present, no SHA-256 recorded",
    "unchecked": "present (SHA-256 not checked)",
}


def package_versions() -> Dict[str, Optional[str]]:
    """Installed versions of the engine's packages (None where one is missing), without importing them."""
    versions: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_memory() -> Dict[str, Optional[int]]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return {
            "total": page * os.sysconf("SC_PHYS_PAGES"),
            "available": page * os.sysconf("SC_AVPHYS_PAGES"),
        }
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return {"total": None, "available": None}


def device_info(device: Any = None) -> Dict[str, Any]:
    """The device a job runs on (``None``: the one the engine would pick) and its memory in bytes."""
    import torch

    from engine.models.devices import pick_device, precision_choice

    device = pick_device(str(device) if device is not None else None)
    info: Dict[str, Any] = {"device": str(device), "type": device.type, "torch_build": torch.__version__}
    info["precision"] = precision_choice("auto", device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        info.update(
            name=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            memory_total=int(total),
            memory_free=int(free),
            cuda=torch.version.cuda,
        )
    elif device.type == "mps":
        memory = _host_memory()  # unified memory: the GPU shares the host's
        info.update(name="Apple GPU (MPS)", memory_total=memory["total"], memory_free=memory["available"])
    else:
        memory = _host_memory()
        info.update(
            name=cpu_name(),
            memory_total=memory["total"],
            memory_free=memory["available"],
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
        )
    return info


def preset_info(
    preset_name: str, weights_dir: Optional[str] = None, hash_files: bool = True
) -> Dict[str, Any]:
    """The preset, whether it is ready, and each weight file's state (never raises for a bad preset)."""
    from engine.errors import EngineError
    from engine.models.registry import get_preset, resolve_weights_dir
    from engine.models.weights import preset_status

    try:
        preset = get_preset(preset_name)
        folder = resolve_weights_dir(weights_dir)
        statuses = preset_status(preset, folder, hash_file=hash_files)
    except EngineError as exc:
        return {"name": preset_name, "ready": False, "error": str(exc), "files": []}
    required = statuses[: len(preset.required_models)]
    files = [
        {
            "kind": s.spec.kind,
            "path": str(s.path),
            "state": s.state,
            "detail": s.detail,
            "optional": s.spec.kind not in ("diffusion", "clip", "pipeline_file"),
            "generated": bool(s.spec.generated),
            "urls": list(s.spec.urls),
        }
        for s in statuses
    ]
    ready = all(
        s.ok or s.state == "unchecked" or (s.spec.generated and s.state == "missing") for s in required
    )
    return {
        "name": preset.name,
        "description": preset.description,
        "weights_dir": str(folder),
        "ready": ready,
        "files": files,
        "edit_defaults": dict(preset.edit_defaults),
    }


def report(
    preset_name: str = "default",
    weights_dir: Optional[str] = None,
    device: Any = None,
    log_path: Optional[str] = None,
    hash_files: bool = True,
    estimate: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Everything ``doctor`` shows, as data."""
    from engine import __version__

    try:
        device_part: Dict[str, Any] = device_info(device)
    except Exception as exc:  # noqa: BLE001 - an unusable device is itself the finding
        device_part = {"device": str(device or "auto"), "error": str(exc)}
    return {
        "engine": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_part,
        "preset": preset_info(preset_name, weights_dir, hash_files),
        "estimate": estimate,
        "log": log_path,
    }


def stored_estimate(preset_name: str, device: Any = None, candidates: int = 4) -> Optional[Dict[str, Any]]:
    """The estimated time of a default edit (``candidates`` at the preset's recommended settings) from the
    step times earlier edits measured on this device and the time outside the steps they stored
    (engine/editing/timing.py; one run: the plugin's batch of up to 4); None before the first."""
    try:
        from engine.editing.shared.params import preset_edit_defaults
        from engine.editing.timing import (
            StepTimes,
            describe_seconds,
            edit_seconds,
            mode_estimates,
            store_key,
        )
        from engine.models.devices import pick_device
        from engine.models.registry import get_preset

        preset = get_preset(preset_name)
        device = pick_device(str(device) if device is not None else None)
        times = StepTimes().get(store_key(device, preset.name))
        if not times:
            return None
        per_candidate = mode_estimates(times, preset_edit_defaults(preset))
        fixed = edit_seconds(times)
    except Exception:  # noqa: BLE001 - no estimate is a finding, never a failure of the report
        return None
    paper = per_candidate.get("paper")
    if paper is None:
        return None
    modes = ", ".join(
        f"{name} {describe_seconds(seconds)}"
        for name, seconds in per_candidate.items()
        if seconds is not None
    )
    seconds = candidates * paper + fixed
    return {
        "seconds": seconds,
        "per_candidate": per_candidate,
        "per_edit": fixed,
        "text": f"{describe_seconds(seconds)} for {candidates} candidates "
        f"(per candidate: {modes}; {fixed:.1f} s per edit besides)",
    }


def _size(value: Optional[int]) -> str:
    return "unknown" if value is None else f"{value / 2**30:.1f} GiB"


def format_report(data: Dict[str, Any]) -> str:
    """The report as text, one fact per line (also what the plugin's dialog shows)."""
    lines: List[str] = [f"Blended Diffusion engine {data.get('engine', '?')}"]
    python = data.get("python", {})
    lines.append(f"Python {python.get('version', '?')} ({python.get('executable', '?')})")
    lines.append(f"Platform: {data.get('platform', '?')}")
    packages = data.get("packages", {})
    lines.append(
        "Packages: " + ", ".join(f"{name} {version or 'MISSING'}" for name, version in packages.items())
    )
    device = data.get("device", {})
    if "error" in device:
        lines.append(f"Device: {device.get('device')}: {device['error']}")
    else:
        extra = (
            f", compute capability {device['compute_capability']}" if device.get("compute_capability") else ""
        )
        threads = f", {device['threads']} threads" if device.get("threads") else ""
        lines.append(
            f"Device: {device.get('device')} ({device.get('name', '?')}{extra}{threads}); memory "
            f"{_size(device.get('memory_free'))} free of {_size(device.get('memory_total'))}; "
            f"torch build {device.get('torch_build', '?')}"
        )
        if device.get("precision"):
            lines.append(f"Precision: {device['precision']}")
    preset = data.get("preset", {})
    state = "ready" if preset.get("ready") else "NOT READY"
    lines.append(
        f"Preset: {preset.get('name')} [{state}]" + (f": {preset['error']}" if preset.get("error") else "")
    )
    folder = preset.get("weights_dir")
    if folder and any(item["path"].startswith(folder) for item in preset.get("files", [])):
        lines.append(f"  weights folder: {folder}")
    for item in preset.get("files", []):
        text = STATE_TEXT.get(item["state"], item["state"])
        if item["state"] == "missing" and item.get("generated"):
            text = "made on first use"
        optional = " (optional)" if item.get("optional") else ""
        detail = f" ({item['detail']})" if item.get("detail") else ""
        lines.append(f"  {item['kind']}{optional}: {item['path']}: {text}{detail}")
        if item["state"] in ("missing", "partial", "truncated", "corrupt") and not item.get("generated"):
            lines.extend(f"      download from {url}" for url in item.get("urls", []))
    if not preset.get("ready") and not preset.get("error"):
        lines.append(f"  fetch the missing files with: python -m engine download {preset.get('name')}")
    estimate = data.get("estimate")
    if estimate and estimate.get("text"):
        lines.append(f"Estimated time of a default edit: {estimate['text']}")
    else:
        lines.append(
            "Estimated time of a default edit: not measured yet on this device (the first edit measures it)"
        )
    lines.append(f"Log: {data.get('log') or 'none (the engine logs to its console)'}")
    return "\n".join(lines)
