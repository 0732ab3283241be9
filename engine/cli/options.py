"""The options ``edit`` and ``extend`` share: the reference's names and defaults, the engine's own, and
which of them the user gave explicitly (recorded by their argparse actions in ``args.explicit_options``,
so an option given with the reference's value still wins over a preset's recommendation).

Standard library only: ``engine/__main__.py`` imports the command modules just to build the parser.
"""

from __future__ import annotations

import argparse

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


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The edit's own inputs: prompt, image, mask or regions, scribble."""
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "-p",
        "--prompt",
        type=str,
        required=True,
        help='the prompt for the desired edit; "" removes (plain blended inpainting); with --region, the '
        "background prompt",
    )
    inputs.add_argument("-i", "--init_image", type=str, required=True, help="the source image (any size)")
    inputs.add_argument(
        "--mask",
        type=str,
        default=None,
        help="mask, same size as the image: white = edit, soft edges allowed (default: the whole image)",
    )
    inputs.add_argument(
        "--region",
        dest="regions",
        action="append",
        default=None,
        metavar="MASK.png:PROMPT",
        help="a region (issue 39), instead of --mask: a mask like --mask's and its own prompt; repeat it "
        "for several (up to 8), edited in one job within their union, --prompt conditioning the rest. "
        "The file is the text before the first ':' that names an existing file (C:\\m.png:a cat works), "
        "the prompt all after it (it may hold ':')",
    )
    inputs.add_argument(
        "--scribble_image",
        type=str,
        default=None,
        help="scribble-guided editing: this image (same size) is the start inside the mask",
    )


def add_detail_arguments(parser: argparse.ArgumentParser) -> None:
    """The full-resolution detail pass (engine/editing/paper/detail.py, latent/detail.py for a latent preset;
    docs/detail.md, docs/latent.md). Checked by
    validate_params, so a bad value is one line and exit status 2."""
    detail = parser.add_argument_group("full-resolution detail (issue 22; docs/detail.md)")
    detail.add_argument(
        "--detail",
        type=str,
        action=_Store,
        default="off",
        help="auto | on | off: re-sample each candidate at the image's resolution over model-size tiles "
        "fused at every step, in pixels or a latent preset's latents (auto: only when that costs less than "
        "the edit at the model's size)",
    )
    detail.add_argument(
        "--detail_strength",
        type=float,
        action=_Store,
        default=None,
        help="fraction of the schedule the upscaled candidate is noised to (above 0, at most 1; default: "
        "the measured one, docs/detail.md)",
    )


def add_shared_arguments(parser: argparse.ArgumentParser, mask_options: bool = True) -> None:
    """The options every diffusion command shares (edit, extend): diffusion, guidance, candidates, engine."""
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

    if mask_options:
        mask = parser.add_argument_group("mask")
        mask.add_argument("--invert_mask", action=_Flag, help="edit outside the mask (new background)")
        mask.add_argument(
            "--no_enforce_background",
            action=_Flag,
            const=False,
            dest="enforce_background",
            help="do not paste the exact background back at the end",
        )
    else:
        parser.set_defaults(invert_mask=False, enforce_background=True)

    quality = parser.add_argument_group("quality modes (issue 16; docs/performance.md)")
    quality.add_argument(
        "--quality",
        choices=("paper", "balanced", "fast"),
        default="paper",
        help="paper: the paper's settings (or the preset's recommended ones); balanced / fast: fewer steps "
        "at the same strength, guidance on the clean estimate at a lower lambda (explicit options win)",
    )
    quality.add_argument(
        "--guidance_grad",
        type=str,
        metavar="{unet,x0}",
        action=_Store,
        default="unet",
        help="unet: the paper's gradient through the UNet; x0: the gradient w.r.t. the clean estimate only "
        "(no backward through the UNet, about 1.3 instead of 3 UNet forwards a guided step)",
    )

    latent = parser.add_argument_group("Blended Latent Diffusion (presets whose method is latent)")
    latent.add_argument(
        "--guidance_scale",
        type=float,
        action=_Store,
        default=None,
        help="classifier-free guidance (default: the preset's, 7.5 for SD 1.x/2.x, 5 for SDXL)",
    )
    latent.add_argument(
        "--no_mask_shrink",
        dest="mask_shrink",
        action=_Flag,
        const=False,
        help="no progressive mask shrinking (the dilated masks of the first steps, for thin selections)",
    )
    latent.add_argument(
        "--background_reconstruction",
        action=_Flag,
        help="decode each candidate with a decoder copy fine-tuned to the source outside the mask (slow)",
    )
    latent.add_argument(
        "--no_differential",
        dest="differential",
        action=_Flag,
        const=False,
        help="binarise a soft selection for the diffusion instead of using its values as per-pixel strength",
    )
    latent.add_argument(
        "--seam_fix",
        type=str,
        metavar="{auto,off,LEVER[+LEVER...]}",
        action=_Store,
        default="auto",
        help="after decoding, levers colour (LAB match to the source at the border), residual (the VAE's own "
        "error on the source added back where nothing was drawn), band (faded into the source just inside "
        "the border), joined by '+'; off: none; auto: the latent default",
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
        help="auto: bf16 on CUDA (fp16 below compute capability 8), fp32 elsewhere",
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


def explicit_options(args: argparse.Namespace) -> frozenset:
    """The edit options given on the command line (recorded by their actions)."""
    recorded = getattr(args, EXPLICIT, None)
    if recorded is not None:
        return frozenset(recorded)
    # A Namespace not made by add_arguments' parser: take a value that differs from the reference's as set.
    from engine.editing.shared.params import EditParams

    reference = EditParams()
    return frozenset(
        name
        for name, value in vars(args).items()
        if hasattr(reference, name) and value != getattr(reference, name)
    )
