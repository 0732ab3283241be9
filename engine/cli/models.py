"""``python -m engine models`` (list presets and the state of their files) and
``python -m engine download [PRESET]`` (fetch and verify them).

Listing needs no torch; ``download`` imports it only to generate a locally made preset (``tiny``).
"""

from __future__ import annotations

import argparse
import sys

STATE_TEXT = {
    "ok": "present, SHA-256 verified",
    "missing": "missing",
    "partial": "partly downloaded",
    "truncated": "TRUNCATED",
    "corrupt": "CORRUPT",
    "unrecorded": "present, no SHA-256 recorded",
    "unchecked": "present",
}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "download":
        parser.add_argument(
            "preset",
            nargs="?",
            default="default",
            help="preset name or a folder holding a preset.json (default: %(default)s)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    else:
        parser.add_argument("--quick", action="store_true", help="check presence and size only, skip SHA-256")
    parser.add_argument(
        "--weights-dir",
        default=None,
        help="weights folder (default: $BLENDED_DIFFUSION_WEIGHTS or the per-user data folder)",
    )


def run(args: argparse.Namespace) -> int:
    from engine.errors import EngineError

    try:
        if args.command == "download":
            return _download(args)
        return _list(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _list(args: argparse.Namespace) -> int:
    from engine.models.registry import get_preset, list_presets, resolve_weights_dir
    from engine.models.weights import preset_status

    folder = resolve_weights_dir(args.weights_dir)
    print(f"weights folder: {folder}")
    for name in list_presets():
        preset = get_preset(name)
        statuses = preset_status(preset, folder, hash_file=not args.quick)
        required = statuses[: len(preset.required_models)]  # optional extras do not block "ready"
        # a diffusers folder placed by hand has no digests yet: they are recorded when it is first loaded
        ready = all(s.ok or s.state == "unchecked" or _placed(s) for s in required)
        generated = all(s.spec.generated for s in required)
        if ready:
            summary = "ready"
        elif generated:
            summary = "made on first use"
        elif preset.pipeline is not None and any(_to_place(s) for s in required):
            summary = f"not ready: {_placing_hint(preset, folder)}"
        else:
            summary = f"not ready: run `python -m engine download {name}`"
        print(f"\n{name}: {preset.description}\n  [{summary}]")
        if preset.pipeline is not None:
            licence = f", licence: {preset.pipeline.licence}" if preset.pipeline.licence else ""
            print(f"  method: latent (Blended Latent Diffusion), {preset.pipeline.resolution} px{licence}")
        for status in statuses:
            state = STATE_TEXT.get(status.state, status.state)
            if status.state == "missing" and status.spec.generated:
                state = "not generated yet"
            detail = f" ({status.detail})" if status.detail else ""
            if status.spec.kind == "lpips_backbone":
                detail += " [optional: Algorithm 1 / background preservation loss only]"
            print(f"  {status.spec.kind:14} {status.path}: {state}{detail}")
    return 0


def _placed(status) -> bool:
    return status.spec.kind == "pipeline_file" and status.state == "unrecorded"


def _to_place(status) -> bool:
    """A missing file of a diffusers folder that no download provides: the user places it."""
    spec = status.spec
    return (
        spec.kind == "pipeline_file"
        and spec.source_path is None
        and not spec.urls
        and status.state == "missing"
    )


def _placing_hint(preset, folder) -> str:
    from engine.models.registry import pipeline_root

    parts = sorted({spec.file.split("/")[-2] + "/" for spec in preset.pipeline.files if "/" in spec.file})
    return (
        f"no download is built in for these files: place the model's folder in diffusers layout "
        f"({', '.join(parts)}) at {pipeline_root(preset, folder)}"
    )


def _download(args: argparse.Namespace) -> int:
    from engine.models.registry import get_preset, resolve_weights_dir
    from engine.models.weights import check_file, download

    preset = get_preset(args.preset)
    folder = resolve_weights_dir(args.weights_dir)
    models = preset.models
    if preset.pipeline is not None and preset.pipeline.source is not None:
        from engine.models.hub import download_pipeline

        for path in download_pipeline(
            preset, folder, show_progress=not args.no_progress, timeout=args.timeout
        ):
            print(f"pipeline_file: {path} (SHA-256 verified)")
        models = [preset.clip] if preset.clip is not None else []
    elif preset.pipeline is not None and any(
        _to_place(check_file(s, folder, False)) for s in preset.pipeline.files
    ):
        print(f"error: preset {preset.name!r}: {_placing_hint(preset, folder)}", file=sys.stderr)
        return 1
    for spec in models:
        if spec.kind == "lpips_backbone" and spec.size_bytes:
            print(
                f"{spec.kind}: {spec.file} ({spec.size_bytes / 2**20:.0f} MB) is needed only by the "
                "Algorithm 1 baseline / background preservation loss"
            )
        if spec.generated:
            from engine.models.loading import ensure_file  # imports torch

            path = ensure_file(spec, folder, preset.name)
            print(f"{spec.kind}: {path} (generated locally, SHA-256 recorded and verified)")
            continue
        path = download(
            spec, folder, show_progress=not args.no_progress, timeout=args.timeout, preset_name=preset.name
        )
        print(f"{spec.kind}: {path} (SHA-256 verified)")
    print(f"preset {preset.name!r} is ready")
    return 0
