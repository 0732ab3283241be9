"""``python -m engine edit``: the reference's command line (same option names and defaults), any image size.

Writes into --output_path exactly the ranked candidate PNGs (``01_seed404.png`` ... : name order is rank
order) and ``scores.json`` beside them. Bad input is one line on stderr, exit status 2, nothing written.

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
from typing import Any, Dict, List, Optional

SCORES_FILE = "scores.json"
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
EXPLICIT = "explicit_options"  # Namespace attribute: the dests of the edit options given on the command line


def _record_explicit(namespace: argparse.Namespace, dest: str) -> None:
    # A new frozenset each time: the parser's default (an empty frozenset) is shared between parses.
    setattr(namespace, EXPLICIT, frozenset(getattr(namespace, EXPLICIT, frozenset())) | {dest})


class _Store(argparse.Action):
    """Like ``store``, and records that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        _record_explicit(namespace, self.dest)


class _Flag(argparse.Action):
    """Like ``store_true`` / ``store_false`` (``const`` is the value stored), and records the option."""

    def __init__(self, option_strings, dest, const=True, default=None, help=None) -> None:
        default = (not const) if default is None else default
        super().__init__(option_strings, dest, nargs=0, const=const, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.const)
        _record_explicit(namespace, self.dest)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "-p",
        "--prompt",
        type=str,
        required=True,
        help='the prompt for the desired edit; "" removes (plain blended inpainting)',
    )
    inputs.add_argument("-i", "--init_image", type=str, required=True, help="the source image (any size)")
    inputs.add_argument(
        "--mask",
        type=str,
        default=None,
        help="mask, same size as the image: white = edit, soft edges allowed (default: the whole image)",
    )
    inputs.add_argument(
        "--scribble_image",
        type=str,
        default=None,
        help="scribble-guided editing: this image (same size) is the start inside the mask",
    )

    diffusion = parser.add_argument_group("diffusion")
    diffusion.add_argument(
        "--skip_timesteps",
        type=int,
        action=_Store,
        default=25,
        help="how many of the respaced steps to skip (more keeps more of the input)",
    )
    diffusion.add_argument(
        "--local_clip_guided_diffusion",
        action=_Flag,
        help="the paper's Algorithm 1 baseline (no blending, background losses)",
    )
    diffusion.add_argument(
        "--timestep_respacing",
        type=str,
        action=_Store,
        default="100",
        help='respaced step count, e.g. "100", "50", "ddim25"',
    )
    diffusion.add_argument("--ddim", action=_Flag, help="DDIM (eta 0) steps instead of DDPM")

    guidance = parser.add_argument_group("guidance")
    guidance.add_argument(
        "--aug_num", type=int, action=_Store, default=8, help="number of CLIP views (first one clean)"
    )
    guidance.add_argument(
        "--clip_guidance_lambda",
        type=float,
        action=_Store,
        default=1000,
        help="how strongly the region should look like the prompt",
    )
    guidance.add_argument(
        "--range_lambda",
        type=float,
        action=_Store,
        default=50,
        help="penalty on colours outside the valid range",
    )
    guidance.add_argument(
        "--lpips_sim_lambda",
        type=float,
        action=_Store,
        default=1000,
        help="LPIPS similarity to the input background (Algorithm 1)",
    )
    guidance.add_argument(
        "--l2_sim_lambda",
        type=float,
        action=_Store,
        default=10000,
        help="L2 similarity to the input background (Algorithm 1)",
    )
    guidance.add_argument(
        "--background_preservation_loss",
        action=_Flag,
        help="add the background losses (on by itself with --local_clip_guided_diffusion)",
    )

    mask = parser.add_argument_group("mask")
    mask.add_argument("--invert_mask", action=_Flag, help="edit outside the mask (new background)")
    mask.add_argument(
        "--no_enforce_background",
        action=_Flag,
        const=False,
        dest="enforce_background",
        help="do not paste the exact background back at the end",
    )

    quality = parser.add_argument_group("quality modes (issue 16; docs/performance.md)")
    quality.add_argument(
        "--quality",
        choices=("paper", "balanced", "fast"),
        default="paper",
        help="paper: the paper's settings (or the preset's recommended ones); balanced / fast: fewer steps "
        "at the same strength, guidance on fewer steps, fewer augmentations (options given explicitly win)",
    )
    quality.add_argument(
        "--guidance_every",
        type=int,
        action=_Store,
        default=1,
        help="guide every k-th step only (the others: one UNet forward without gradient)",
    )
    quality.add_argument(
        "--prune_factor",
        type=int,
        action=_Store,
        default=1,
        help="start this many times the candidates and keep the best 1/prune_factor of them",
    )
    quality.add_argument(
        "--prune_at",
        type=float,
        action=_Store,
        default=0.25,
        help="fraction of the steps after which the started candidates are ranked and pruned",
    )

    misc = parser.add_argument_group("candidates and output")
    misc.add_argument(
        "--seed",
        type=int,
        action=_Store,
        default=404,
        help="seed of the first candidate (the others: +1, +2...)",
    )
    misc.add_argument("--batch_size", type=int, action=_Store, default=4, help="candidates made at once")
    misc.add_argument("--iterations_num", type=int, action=_Store, default=8, help="batches to make")
    misc.add_argument(
        "--output_path",
        type=str,
        default="output",
        help="folder for the ranked PNGs and scores.json (created; must hold no PNG yet)",
    )

    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--models",
        type=str,
        default="default",
        help="models preset name (default, tiny, toy, adm512) or a folder with preset.json",
    )
    engine.add_argument("--device", type=str, default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    engine.add_argument(
        "--weights-dir",
        dest="weights_dir",
        type=str,
        default=None,
        help="folder holding the weight files (default: $BLENDED_DIFFUSION_WEIGHTS or the "
        "per-user data folder)",
    )
    engine.add_argument(
        "--precision",
        action=_Store,
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 elsewhere",
    )
    engine.add_argument("--compile", action=_Flag, help="torch.compile the UNet (slow first step)")
    engine.add_argument(
        "--no_preset_defaults",
        action="store_true",
        help="ignore the settings the models preset recommends (its edit_defaults) and use the "
        "reference defaults for every option not given",
    )
    engine.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(**{EXPLICIT: frozenset()})


def _edit_params(args: argparse.Namespace):
    from engine.editing.params import EditParams

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
        guidance_every=args.guidance_every,
        prune_factor=args.prune_factor,
        prune_at=args.prune_at,
    )


def _explicit_options(args: argparse.Namespace) -> frozenset:
    """The edit options given on the command line (recorded by their actions)."""
    recorded = getattr(args, EXPLICIT, None)
    if recorded is not None:
        return frozenset(recorded)
    # A Namespace not made by add_arguments' parser: take a value that differs from the reference's as set.
    from engine.editing.params import EditParams

    reference = EditParams()
    return frozenset(
        name
        for name, value in vars(args).items()
        if hasattr(reference, name) and value != getattr(reference, name)
    )


def apply_preset_defaults(params, args: argparse.Namespace, edit_defaults: Dict[str, Any]):
    """(params, changed): the preset's recommended values for the options the user did not give.

    ``changed`` holds the values that differ from what ``params`` had (for the stderr line).
    """
    import dataclasses

    if getattr(args, "no_preset_defaults", False) or not edit_defaults:
        return params, {}
    explicit = _explicit_options(args)
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


def _load_inputs(args: argparse.Namespace, invert_mask: bool):
    """Open and check every input file before the models load, so bad input fails in a second."""
    from PIL import Image

    from engine.editing import imaging
    from engine.errors import InputError

    image = imaging.open_image(args.init_image, "image")
    source = imaging.prepare_source(image, "image")
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


def _write_results(result, params, args: argparse.Namespace) -> List[str]:
    """Write into a temporary folder beside output_path, then move in: all files or none."""
    output = os.path.abspath(args.output_path)
    parent = os.path.dirname(output)
    width = max(2, len(str(len(result.candidates))))
    staging = tempfile.mkdtemp(prefix=".edit-", dir=parent)
    try:
        entries: List[Dict[str, Any]] = []
        names = []
        for candidate in result.candidates:
            name = f"{candidate.rank:0{width}d}_seed{candidate.seed}.png"
            candidate.image.save(os.path.join(staging, name), format="PNG")
            names.append(name)
            entries.append(
                {"rank": candidate.rank, "file": name, "seed": candidate.seed, "scores": candidate.scores}
            )
        summary = {
            "prompt": params.prompt,
            "image": os.path.abspath(args.init_image),
            "mask": None if args.mask is None else os.path.abspath(args.mask),
            "models": args.models,
            "box": list(result.box),
            "notes": result.notes,
            "params": params.to_dict(),
            "ranking": "combined = 0.5 * masked_clip + 0.5 * full_clip (spherical CLIP distances, lower is "
            "better)",
            "candidates": entries,
        }
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
        from engine.editing.modes import apply_mode
        from engine.editing.params import preset_edit_defaults, validate_params
        from engine.models.registry import get_preset

        preset = get_preset(args.models)  # an unknown preset fails here, before torch is imported
        params, changed = apply_preset_defaults(_edit_params(args), args, preset_edit_defaults(preset))
        params = apply_mode(params, getattr(args, "quality", "paper"), _explicit_options(args))

        validate_params(params)
        _check_output_path(args.output_path)
        image, mask, scribble = _load_inputs(args, params.invert_mask)
        if changed:  # after the input checks, so that bad input stays one line
            print(_preset_line(preset.name, changed), file=sys.stderr)

        from engine.editing.editor import edit
        from engine.models.loading import load_models

        models = load_models(preset, args.weights_dir, args.device)
        timer, estimate = _timing(models, params)
        if params.quality != "paper" or estimate is not None:
            print(_plan_line(params, estimate, models), file=sys.stderr)
        bar = _progress_bar(args)
        try:
            on_progress = bar.update if bar else None
            result = edit(image, mask, models, params, init_image=scribble, progress=on_progress, timer=timer)
        finally:
            if bar is not None:
                bar.close()
        names = _write_results(result, params, args)
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


def _timing(models, params):
    """(StepTimer recording this device's step times, the estimate in seconds or None before any)."""
    from engine.editing.timing import StepTimer, StepTimes, device_key, estimate_seconds

    store = StepTimes()
    key = f"{device_key(models.device)}|{getattr(models, 'preset', '?')}"
    estimate = estimate_seconds(params, store.get(key), guided=bool(params.prompt.strip()))
    return StepTimer(store, key), estimate


def _plan_line(params, estimate: Optional[float], models) -> str:
    from engine.editing.timing import describe_seconds

    mode = (
        f"quality {params.quality}: timestep_respacing={params.timestep_respacing}, "
        f"skip_timesteps={params.skip_timesteps}, aug_num={params.aug_num}, "
        f"guidance_every={params.guidance_every}, prune_factor={params.prune_factor}"
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
