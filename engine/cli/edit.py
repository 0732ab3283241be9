"""``python -m engine edit``: the reference's command line (same option names and defaults), any image size.

Writes into --output_path exactly the ranked candidate PNGs (``01_seed404.png`` ... : name order is rank
order) and ``scores.json`` beside them. Bad input is one line on stderr, exit status 2, nothing written.

``--region MASK.png:PROMPT`` (repeatable, issue 39) edits several selections with their own prompts in one
job instead of ``--mask``; ``--prompt`` is then the background prompt (:func:`parse_region` splits it).

A preset may recommend settings (``edit_defaults`` in its file, e.g. a short schedule for the toy models):
they replace the reference defaults of the options not given on the command line (one stderr line says
which), unless ``--no_preset_defaults``. Explicit options are recorded by their argparse actions in
``args.explicit_options``, so an option given with the reference's value still wins over the preset.

Heavy imports (torch, the models) happen inside ``run()``: ``engine/__main__.py`` imports this module just
to build its argument parser.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from engine.cli.options import (
    add_detail_arguments,
    add_input_arguments,
    add_shared_arguments,
    explicit_options,
)

SCORES_FILE = "scores.json"
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    add_shared_arguments(parser)
    add_detail_arguments(parser)


def _edit_params(args: argparse.Namespace):
    from engine.editing.shared.params import EditParams

    return EditParams(
        prompt=args.prompt,
        skip_timesteps=args.skip_timesteps,
        timestep_respacing=args.timestep_respacing,
        ddim=args.ddim,
        aug_num=args.aug_num,
        clip_guidance_lambda=args.clip_guidance_lambda,
        range_lambda=args.range_lambda,
        lpips_sim_lambda=args.lpips_sim_lambda,
        l2_sim_lambda=args.l2_sim_lambda,
        background_preservation_loss=args.background_preservation_loss,
        invert_mask=args.invert_mask,
        enforce_background=args.enforce_background,
        local_clip_guided_diffusion=args.local_clip_guided_diffusion,
        seed=args.seed,
        batch_size=args.batch_size,
        iterations_num=args.iterations_num,
        precision=args.precision,
        compile=args.compile,
        guidance_grad=args.guidance_grad,
        guidance_scale=getattr(args, "guidance_scale", None),
        mask_shrink=getattr(args, "mask_shrink", True),
        background_reconstruction=getattr(args, "background_reconstruction", False),
        differential=getattr(args, "differential", True),
        seam_fix=getattr(args, "seam_fix", "auto"),
        detail=getattr(args, "detail", "off"),
        detail_strength=(
            args.detail_strength
            if getattr(args, "detail_strength", None) is not None
            else EditParams.detail_strength
        ),
    )


def apply_preset_defaults(params, args: argparse.Namespace, edit_defaults: Dict[str, Any]):
    """(params, changed): the preset's recommended values for the options the user did not give.

    ``changed`` holds the values that differ from what ``params`` had (for the stderr line).
    """
    import dataclasses

    if getattr(args, "no_preset_defaults", False) or not edit_defaults:
        return params, {}
    explicit = explicit_options(args)
    # Field types (strings under postponed annotations), to widen JSON numbers as the options' types
    # would parse them: 500 -> 500.0 for a float, 25 -> "25" for timestep_respacing. Nothing narrows.
    kinds = {f.name: getattr(f.type, "__name__", f.type) for f in dataclasses.fields(params)}
    updates: Dict[str, Any] = {}
    changed: Dict[str, Any] = {}
    for name, value in edit_defaults.items():
        if name in explicit:
            continue
        current = getattr(params, name)
        if isinstance(value, int) and not isinstance(value, bool):
            if kinds[name] == "float":
                value = float(value)
            elif kinds[name] == "str":
                value = str(value)
        updates[name] = value
        if value != current:
            changed[name] = value
    return dataclasses.replace(params, **updates), changed


def _preset_line(preset_name: str, changed: Dict[str, Any]) -> str:
    def shown(value: Any) -> Any:  # 500.0 reads as the preset file's 500
        return int(value) if isinstance(value, float) and value.is_integer() else value

    values = ", ".join(f"{name}={shown(value)}" for name, value in changed.items())
    return (
        f"preset {preset_name!r} recommends: {values}; pass --no_preset_defaults to use the reference "
        "defaults"
    )


def _check_output_path(path: str) -> None:
    from engine.errors import InputError

    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputError(f"output_path {path} exists and is not a folder")
        clashing = [n for n in os.listdir(path) if n.lower().endswith(".png") or n == SCORES_FILE]
        if clashing:
            raise InputError(
                f"output_path {path} already holds results ({clashing[0]}...): choose an empty or new folder"
            )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"the folder containing output_path does not exist: {parent}")


def parse_region(text: str) -> Tuple[str, str]:
    """(mask path, prompt) of ``--region MASK.png:PROMPT``: the path is the text before the first ':'
    whose left side is an existing file, the prompt all after it. So a Windows drive (``C:\\m.png:a cat``)
    and a prompt holding ':' both work; InputError when no ':' has an existing file before it."""
    from engine.errors import InputError

    for index, char in enumerate(text):
        if char == ":" and os.path.isfile(text[:index]):
            return text[:index], text[index + 1 :]
    if ":" not in text:
        raise InputError(f"--region {text!r} has no ':': give MASK.png:PROMPT")
    raise InputError(f"--region {text!r}: no existing mask file before a ':' (give MASK.png:PROMPT)")


def _region_specs(args: argparse.Namespace, params, context_length: int) -> List[Tuple[str, str]]:
    """The --region options as (mask path, prompt), checked before any file is opened; [] without."""
    from bridge.limits import LimitError, check_region_count
    from engine.editing.shared.limits import check_prompt_tokens
    from engine.errors import InputError

    texts = getattr(args, "regions", None) or []
    if not texts:
        return []
    if args.mask is not None:
        raise InputError("give --mask or --region, not both: the regions' union is the edited area")
    if params.invert_mask:
        raise InputError("--invert_mask does not apply to --region: each region's mask says what it edits")
    try:
        check_region_count(len(texts))
    except LimitError as exc:
        raise InputError(f"--region: {exc}") from None
    specs = [parse_region(text) for text in texts]
    for number, (_path, prompt) in enumerate(specs, start=1):
        check_prompt_tokens(prompt, f"prompt of region {number}", context_length)
    return specs


def _open_regions(specs: Sequence[Tuple[str, str]], size: Tuple[int, int]):
    """The regions' masks opened like --mask and checked (size, not empty) as edit() will; [] without."""
    if not specs:
        return []
    from engine.editing.shared import imaging
    from engine.editing.shared.regions import Region, check_regions

    regions = [
        Region(imaging.open_image(path, f"region {number} mask"), prompt)
        for number, (path, prompt) in enumerate(specs, start=1)
    ]
    check_regions(regions, size)
    return regions


def _load_inputs(args: argparse.Namespace, invert_mask: bool):
    """Open and check every input file before the models load, so bad input fails in a second. With
    --region the mask is None (the regions are opened by :func:`_open_regions`)."""
    from PIL import Image

    from engine.editing.shared import imaging
    from engine.errors import InputError

    image = imaging.open_image(args.init_image, "image")
    source = imaging.prepare_source(image, "image")
    mask = None
    if not getattr(args, "regions", None):
        if args.mask is not None:
            mask = imaging.open_image(args.mask, "mask")
        else:
            mask = Image.new("L", source.size, 255)
        soft = imaging.mask_array(mask, source.size)
        if invert_mask:
            soft = 255 - soft
        if not soft.any():
            raise InputError(
                "the mask is empty (all black)"
                + (" after --invert_mask" if invert_mask else "")
                + ": white marks the region to edit"
            )
    scribble = None
    if args.scribble_image is not None:
        scribble = imaging.open_image(args.scribble_image, "scribble image")
        if scribble.size != image.size:
            raise InputError(
                f"scribble image size {scribble.width}x{scribble.height} differs from the image size "
                f"{image.width}x{image.height}"
            )
    return image, mask, scribble


def _write_results(
    result, params, args: argparse.Namespace, specs: Sequence[Tuple[str, str]] = ()
) -> List[str]:
    summary: Dict[str, Any] = {
        "prompt": params.prompt,
        "image": os.path.abspath(args.init_image),
        "mask": None if args.mask is None else os.path.abspath(args.mask),
        "models": args.models,
        "box": list(result.box),
        "notes": result.notes,
        "params": params.to_dict(),
        "ranking": "combined = 0.5 * masked_clip + 0.5 * full_clip (spherical CLIP distances, lower is "
        "better)",
    }
    if specs:  # the prompt above is then the background prompt
        summary["regions"] = [{"mask": os.path.abspath(path), "prompt": prompt} for path, prompt in specs]
    return write_ranked(result.candidates, summary, args.output_path)


def write_ranked(candidates, summary: Dict[str, Any], output_path: str) -> List[str]:
    """Write the ranked full-size PNGs and scores.json (``summary`` + the candidates) into a temporary
    folder beside output_path, then move them in: all files or none."""
    output = os.path.abspath(output_path)
    parent = os.path.dirname(output)
    width = max(2, len(str(len(candidates))))
    staging = tempfile.mkdtemp(prefix=".edit-", dir=parent)
    try:
        entries: List[Dict[str, Any]] = []
        names = []
        for candidate in candidates:
            name = f"{candidate.rank:0{width}d}_seed{candidate.seed}.png"
            candidate.image.save(os.path.join(staging, name), format="PNG")
            names.append(name)
            entries.append(
                {"rank": candidate.rank, "file": name, "seed": candidate.seed, "scores": candidate.scores}
            )
        summary = {**summary, "candidates": entries}
        with open(os.path.join(staging, SCORES_FILE), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
        if not os.path.exists(output):
            os.replace(staging, output)
            staging = ""
        else:
            for name in [*names, SCORES_FILE]:
                os.replace(os.path.join(staging, name), os.path.join(output, name))
        return names
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from engine.errors import Cancelled, EngineError

    try:
        from engine.editing.paper.modes import apply_mode
        from engine.editing.shared.limits import check_prompt_tokens
        from engine.editing.shared.params import preset_edit_defaults, validate_params
        from engine.models.registry import get_preset

        preset = get_preset(args.models)  # an unknown preset fails here, before torch is imported
        params, changed = apply_preset_defaults(_edit_params(args), args, preset_edit_defaults(preset))
        params = apply_mode(params, getattr(args, "quality", "paper"), explicit_options(args))

        validate_params(params)
        check_prompt_tokens(params.prompt, "prompt", _context_length(preset))
        specs = _region_specs(args, params, _context_length(preset))
        _check_output_path(args.output_path)
        image, mask, scribble = _load_inputs(args, params.invert_mask)
        regions = _open_regions(specs, image.size)
        if changed:  # after the input checks, so that bad input stays one line
            print(_preset_line(preset.name, changed), file=sys.stderr)

        from engine.editing.editor import edit
        from engine.models.loading import load_models

        models = load_models(preset, args.weights_dir, args.device)
        timer, estimate = _timing(models, params, mask)
        if params.quality != "paper" or estimate is not None:
            print(_plan_line(params, estimate, models), file=sys.stderr)
        bar = _progress_bar(args)
        try:
            on_progress = bar.update if bar else None
            job = dict(init_image=scribble, progress=on_progress, timer=timer, regions=regions or None)
            result = edit(image, mask, models, params, **job)
        finally:
            if bar is not None:
                bar.close()
        names = _write_results(result, params, args, specs)
        _save_times(timer)  # after the writing: the estimate counts it too
    except Cancelled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("error: interrupted, nothing written", file=sys.stderr)
        return EXIT_CANCELLED
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    best = result.candidates[0]
    print(
        f"wrote {len(names)} candidates and {SCORES_FILE} to {args.output_path} "
        f"(best: {names[0]}, scores {best.scores})"
    )
    return 0


def _context_length(preset) -> int:
    """Tokens the preset's CLIP reads (77 for every shipped one)."""
    clip = getattr(preset, "clip", None)
    return int(((getattr(clip, "config", None) or {}).get("text_cfg") or {}).get("context_length", 77))


def _timing(models, params, mask=None):
    """(StepTimer recording this device's step times, the estimate in seconds or None before any); the
    estimate includes the detail stage when it will run (engine/editing/paper/detail.py)."""
    from engine.editing.timing import StepTimer, StepTimes, estimate_seconds, store_key

    store = StepTimes()
    key = store_key(models.device, getattr(models, "preset", "?"))
    times = store.get(key)
    estimate = estimate_seconds(params, times, guided=bool(params.prompt.strip()))
    if estimate is not None and mask is not None and params.detail != "off":
        from engine.editing.paper import detail
        from engine.editing.shared import imaging

        soft = imaging.mask_array(mask, mask.size)
        if params.invert_mask:
            soft = 255 - soft
        estimate += detail.planned_seconds(params, soft, int(models.image_size), times)
    return StepTimer(store, key), estimate


def _save_times(timer) -> None:
    try:
        timer.save()
    except OSError as exc:  # the results are written: a step-times file we cannot write is only a note
        print(f"note: step times not saved: {exc}", file=sys.stderr)


def _plan_line(params, estimate: Optional[float], models) -> str:
    from engine.editing.timing import describe_seconds

    mode = (
        f"quality {params.quality}: timestep_respacing={params.timestep_respacing}, "
        f"skip_timesteps={params.skip_timesteps}, aug_num={params.aug_num}, "
        f"guidance_grad={params.guidance_grad}, clip_guidance_lambda={params.clip_guidance_lambda:g}"
    )
    where = "this CPU" if str(models.device) == "cpu" else str(models.device)
    if estimate is None:
        return f"{mode}; first edit of this preset on {where}: measuring its speed"
    return f"{mode}; {describe_seconds(estimate)} on {where}"


class _TqdmProgress:
    """Feeds editor Progress reports into a tqdm bar on stderr."""

    def __init__(self) -> None:
        self.bar: Optional[Any] = None

    def update(self, report) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=report.total, unit="step", desc="editing", file=sys.stderr)
        self.bar.n = report.step
        self.bar.set_postfix_str(f"candidates {report.candidate_offset + 1}+", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(args: argparse.Namespace) -> Optional[_TqdmProgress]:
    return _TqdmProgress() if args.progress else None
