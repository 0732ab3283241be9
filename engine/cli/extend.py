"""``python -m engine extend``: text-guided extrapolation, the canvas grown on any sides (paper section 5).

    python -m engine extend -i photo.png --left 200 --right 300 -p "a forest" --prompt_right "the sea" \\
        --output_path results

Shares the edit command's diffusion, guidance, candidate and engine options (and its preset
recommendations). Writes the ranked full-size results (name order is rank order) and ``scores.json``; the
ranking scores each side's new area against that side's prompt. Bad input is one line on stderr, exit
status 2, nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict

from engine.cli.edit import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    SCORES_FILE,
    _check_output_path,
    _context_length,
    _edit_params,
    _preset_line,
    _progress_bar,
    apply_preset_defaults,
    write_ranked,
)
from engine.cli.options import add_shared_arguments, explicit_options

SIDES = ("left", "right", "top", "bottom")  # engine.editing.extend.SIDES (not imported: it loads numpy)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("-i", "--init_image", type=str, required=True, help="the image to extend (any size)")
    inputs.add_argument(
        "-p",
        "--prompt",
        type=str,
        default=None,
        help='what the new area should show, for every side without its own prompt; "" for no guidance',
    )
    sides = parser.add_argument_group("extension")
    for side in SIDES:
        sides.add_argument(f"--{side}", type=int, default=0, metavar="N", help=f"pixels to add on the {side}")
    for side in SIDES:
        sides.add_argument(
            f"--prompt_{side}", type=str, default=None, metavar="P", help=f"the {side} side's own prompt"
        )
    sides.add_argument(
        "--blend_band",
        type=int,
        default=0,
        metavar="N",
        help="let the transition reach N pixels into the original (default 0: the original is untouched)",
    )
    sides.add_argument(
        "--window",
        type=int,
        default=0,
        metavar="N",
        help="canvas pixels per window side (default 0: the model's size, no resampling; larger windows "
        "see more context at lower resolution)",
    )
    add_shared_arguments(parser, mask_options=False)


def _spec(args: argparse.Namespace):
    from engine.editing.extend import ExtendSpec, validate_spec
    from engine.errors import InputError

    side_prompts: Dict[str, str] = {
        side: getattr(args, f"prompt_{side}") for side in SIDES if getattr(args, f"prompt_{side}") is not None
    }
    spec = ExtendSpec(
        **{side: getattr(args, side) for side in SIDES},
        side_prompts=side_prompts,
        blend_band=args.blend_band,
        window=args.window,
    )
    validate_spec(spec)
    if args.prompt is None:
        missing = [side for side in spec.sides() if side not in side_prompts]
        if missing:
            raise InputError(
                f"no prompt for the {missing[0]} side: give -p/--prompt or --prompt_{missing[0]} "
                '("" for no guidance)'
            )
    return spec


def run(args: argparse.Namespace) -> int:
    from engine.errors import Cancelled, EngineError

    try:
        from engine.editing.shared import imaging
        from engine.editing.shared.limits import check_extend, check_prompt_tokens
        from engine.editing.shared.params import preset_edit_defaults, validate_params
        from engine.models.registry import get_preset

        spec = _spec(args)
        if args.prompt is None:
            args.prompt = ""  # every extended side has its own prompt (checked by _spec)
        preset = get_preset(args.models)
        params, changed = apply_preset_defaults(_edit_params(args), args, preset_edit_defaults(preset))
        from engine.editing.paper.modes import apply_mode

        params = apply_mode(params, getattr(args, "quality", "paper"), explicit_options(args))
        validate_params(params)
        for side in spec.sides():
            prompt = spec.prompt_for(side, params.prompt)
            check_prompt_tokens(prompt, f"{side} prompt", _context_length(preset))
        _check_output_path(args.output_path)
        image = imaging.open_image(args.init_image, "image")
        imaging.prepare_source(image, "image")  # unreadable modes fail here, before the models load
        # a latent preset has no ADM flags: its pipeline says the side it runs at
        pipeline = preset.pipeline if preset.method == "latent" else None
        model_size = int(pipeline.resolution if pipeline else preset.diffusion.model_flags["image_size"])
        sides = {side: spec.amount(side) for side in SIDES}
        check_extend(image.size, sides, model_size, None, spec.blend_band, spec.window)
        if changed:
            print(_preset_line(preset.name, changed), file=sys.stderr)

        from engine.editing.extend import extend
        from engine.models.loading import load_models

        models = load_models(preset, args.weights_dir, args.device)
        bar = _progress_bar(args)
        try:
            result = extend(image, spec, models, params, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        summary = {
            "prompt": params.prompt,
            "side_prompts": {side: spec.prompt_for(side, params.prompt) for side in spec.sides()},
            "sides": {side: spec.amount(side) for side in SIDES},
            "blend_band": spec.blend_band,
            "image": os.path.abspath(args.init_image),
            "models": args.models,
            "canvas_size": list(result.canvas_size),
            "offset": list(result.offset),
            "windows": result.windows,
            "notes": result.notes,
            "params": params.to_dict(),
            "ranking": "per side: combined = 0.5 * masked_clip + 0.5 * full_clip of its new area against "
            "its prompt; the candidate's scores are the means over the prompted sides (lower is better)",
        }
        names = write_ranked(result.candidates, summary, args.output_path)
    except Cancelled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("error: interrupted, nothing written", file=sys.stderr)
        return EXIT_CANCELLED
    except (EngineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    width, height = result.canvas_size
    print(
        f"wrote {len(names)} candidates ({width}x{height}) and {SCORES_FILE} to {args.output_path} "
        f"(best: {names[0]}, scores {result.candidates[0].scores})"
    )
    return 0
