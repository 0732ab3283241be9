"""Quality modes (issue 16): what each mode and lever costs, and what it does to the toy world's hit rates.

``toy``: for each configuration (a mode, or ``paper`` with one lever changed) run the toy world's held-out
scenes (toyworld.scenes.edit_case, the same scenes and seeds for every configuration) with the prompt, and
judge every candidate's region by the fixed pixel rule (never by CLIP): the guided hit rate over all
candidates and the top-ranked hit rate (the rank-1 candidate of each scene). Cost per kept candidate is
counted while it runs: UNet rows with gradient count 3 forward equivalents, without 1; CLIP views are
converted at the full-size FLOP ratio (modes.CLIP_VIEW_*), and this process's CPU seconds.

``full``: the ADM-256 + ViT-B/16 architectures (random weights, as bench/edit_bench.py builds them), batch 1,
one torch thread, process CPU time: one guided step, one unguided step, the CLIP work per augmentation count
and the ranking's scoring are measured once each (in fp32 and in bf16 autocast); a mode's seconds per
candidate are these times multiplied by its step plan (modes.step_plan): a whole full-size candidate takes
hours on this CPU, so it is extrapolated, not run.

    PYTHONPATH=. .venv/bin/python bench/quality_modes.py toy --scenes 30 --json /tmp/levers.json
    PYTHONPATH=. .venv/bin/python bench/quality_modes.py toy --configs paper,balanced,fast --scenes 120
    PYTHONPATH=. .venv/bin/python bench/quality_modes.py full --json /tmp/full.json
    PYTHONPATH=. .venv/bin/python bench/quality_modes.py toy --models tiny --scenes 1 --configs paper,fast

No timing is asserted anywhere; tables go to stdout (markdown rows) and to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.limits import respaced_steps  # noqa: E402
from engine.editing.paper.modes import (  # noqa: E402
    CLIP_VIEW_FORWARD,
    CLIP_VIEW_GUIDED,
    MODES,
    resolve_params,
    scale_schedule,
    step_plan,
    unet_equivalents,
)
from engine.editing.shared.params import EditParams  # noqa: E402
from engine.editing.timing import X0_SHARE  # noqa: E402

STEP_FRACTION = "_step_fraction"  # in a configuration's options: the schedule's fraction (not an EditParam)


def lever_configs(base: Dict[str, Any]) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """label -> (quality, explicit options): the modes, then paper with one lever changed."""

    def steps(fraction: float, **more: Any) -> Dict[str, Any]:
        respacing, skip = scale_schedule(base["timestep_respacing"], base["skip_timesteps"], fraction)
        # STEP_FRACTION: the full-size cost scales the reference schedule by the same fraction
        return {"timestep_respacing": respacing, "skip_timesteps": skip, STEP_FRACTION: fraction, **more}

    aug = int(base["aug_num"])
    half_aug = max(1, aug // 2)
    configs: Dict[str, Tuple[str, Dict[str, Any]]] = {name: (name, {}) for name in MODES}
    # most telling first: on a shared CPU a sweep may have to stop early
    configs.update(
        {
            "steps/4": ("paper", steps(0.25)),
            f"aug {half_aug}": ("paper", {"aug_num": half_aug}),
            "steps/2": ("paper", steps(0.5)),
            "ddim steps/4": ("paper", steps(0.25, ddim=True)),
            "bf16": ("paper", {"precision": "bf16"}),
            "steps/6": ("paper", steps(1 / 6)),
            f"aug {max(1, aug // 4)}": ("paper", {"aug_num": max(1, aug // 4)}),
            "ddim steps/2": ("paper", steps(0.5, ddim=True)),
        }
    )
    return configs


class CostCounter:
    """Counts UNet rows (with / without gradient) and CLIP image views while an edit runs."""

    def __init__(self, models) -> None:
        import torch

        self.unet_grad = self.unet_plain = self.clip_grad = self.clip_plain = 0
        self._torch = torch

        def on_unet(_module, inputs, _output) -> None:
            rows = int(inputs[0].shape[0])
            if torch.is_grad_enabled():
                self.unet_grad += rows
            else:
                self.unet_plain += rows

        models.unet.register_forward_hook(on_unet)
        encode = models.clip.encode_image

        def counted(images, *args, **kwargs):
            rows = int(images.shape[0])
            if torch.is_grad_enabled() and images.requires_grad:
                self.clip_grad += rows
            else:
                self.clip_plain += rows
            return encode(images, *args, **kwargs)

        models.clip.encode_image = counted

    def equivalents(self) -> float:
        return (
            3.0 * self.unet_grad
            + self.unet_plain
            + CLIP_VIEW_GUIDED * self.clip_grad
            + CLIP_VIEW_FORWARD * self.clip_plain
        )


def run_toy(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from engine.editing.editor import edit
    from engine.models.loading import load_models
    from toyworld.evaluate import preset_edit_defaults
    from toyworld.judge import region_shape
    from toyworld.scenes import edit_case, region_colour

    torch.set_num_threads(args.threads)
    defaults = preset_edit_defaults(args.models)
    models = load_models(args.models, device="cpu")
    counter = CostCounter(models)
    base = {**EditParams().to_dict(), **defaults}
    configs = lever_configs(base)
    for item in args.extra:  # LABEL=QUALITY:{"option": value, ...}; "steps": a fraction of the schedule
        label, _, spec = item.partition("=")
        quality, _, options = spec.partition(":")
        explicit = json.loads(options or "{}")
        fraction = explicit.pop("steps", None)
        if fraction is not None:
            respacing, skip = scale_schedule(base["timestep_respacing"], base["skip_timesteps"], fraction)
            explicit.update(timestep_respacing=respacing, skip_timesteps=skip)
            explicit[STEP_FRACTION] = fraction
        configs[label] = (quality, explicit)
    chosen = list(configs) if args.configs == "all" else args.configs.split(",")
    rows: List[Dict[str, Any]] = []
    result = {"models": args.models, "threads": args.threads, "rows": rows}
    size = int(models.image_size)
    for label in chosen:
        quality, explicit = configs[label]
        explicit = dict(explicit)
        fraction = explicit.pop(STEP_FRACTION, None)
        hits = top_hits = candidates = both = top_both = 0
        per_scene: List[List[int]] = []  # [scene, colour hits, colour-and-shape hits, top colour, top both]
        counter.unet_grad = counter.unet_plain = counter.clip_grad = counter.clip_plain = 0
        cpu = time.process_time()
        params_shown: Optional[EditParams] = None
        for index in range(args.first_scene, args.first_scene + args.scenes):
            case = edit_case(index, size)
            seed = 10_000 + 100 * index  # toyworld.evaluate's seeds
            params = resolve_params(quality, {**explicit, "prompt": case.prompt, "seed": seed}, defaults)
            params_shown = params
            outcome = edit(case.image, case.mask, models, params)
            colours = [region_colour(c.image, case.box) for c in outcome.candidates]
            # colour and shape, both judged without CLIP (issue 12's instrument)
            shapes = [region_shape(c.image, case.box, c_) for c, c_ in zip(outcome.candidates, colours)]
            right = [c_ == case.colour and s_ == case.kind for c_, s_ in zip(colours, shapes)]
            candidates += len(colours)
            hits += sum(colour == case.colour for colour in colours)
            top_hits += colours[0] == case.colour
            both += sum(right)
            top_both += right[0]
            scene_hits = sum(colour == case.colour for colour in colours)
            per_scene.append([index, scene_hits, sum(right), int(colours[0] == case.colour), int(right[0])])
        cpu = time.process_time() - cpu
        assert params_shown is not None
        # the same mode / lever on the reference settings (a schedule fraction applied to 100 / 25)
        schedule = ("timestep_respacing", "skip_timesteps")
        full_explicit = {k: v for k, v in explicit.items() if k not in schedule}
        if fraction is not None:
            reference = EditParams()
            respacing, skip = scale_schedule(reference.timestep_respacing, reference.skip_timesteps, fraction)
            full_explicit.update(timestep_respacing=respacing, skip_timesteps=skip)
        full_params = resolve_params(quality, full_explicit)
        row = {
            "config": label,
            "params": {
                k: getattr(params_shown, k)
                for k in (
                    "timestep_respacing",
                    "skip_timesteps",
                    "ddim",
                    "aug_num",
                    "precision",
                    "guidance_grad",
                    "clip_guidance_lambda",
                )
            },
            "scenes": args.scenes,
            "trials": candidates,
            "guided_hit_rate": hits / candidates,
            "top_hit_rate": top_hits / args.scenes,
            "guided_both_rate": both / candidates,
            "top_both_rate": top_both / args.scenes,
            "toy_unet_equivalents_per_candidate": counter.equivalents() / candidates,
            "toy_unet_equivalents_formula": unet_equivalents(
                params_shown, respaced_steps(params_shown.timestep_respacing)
            ),
            "toy_cpu_s_per_candidate": cpu / candidates,
            "full_unet_equivalents_per_candidate": unet_equivalents(
                full_params, respaced_steps(full_params.timestep_respacing)
            ),
            "per_scene": per_scene,  # rates on a subset of the scenes, to compare rows run on fewer
        }
        rows.append(row)
        print(
            f"| {label} | {row['guided_hit_rate']:.1%} | {row['top_hit_rate']:.1%} | "
            f"{row['guided_both_rate']:.1%} | {row['top_both_rate']:.1%} | {candidates} / "
            f"{args.scenes} | {row['toy_unet_equivalents_per_candidate']:.1f} | "
            f"{row['toy_cpu_s_per_candidate']:.3f} | {row['full_unet_equivalents_per_candidate']:.1f} | "
            f"{json.dumps(row['params'])} |",
            flush=True,
        )
        if args.json:  # after every configuration: a long sweep stopped early keeps what it measured
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_estimate(args: argparse.Namespace) -> Dict[str, Any]:
    """Two toy edits on this device: the first measures and stores its step times and fixed parts (in a
    temporary store), the second is estimated from them before it runs; the estimate's error against its
    wall time, and the error of the estimate from the step times alone (as before the fixed parts)."""
    import os
    import tempfile

    import torch

    from engine.editing.editor import edit
    from engine.editing.timing import KINDS, StepTimer, StepTimes, estimate_seconds, store_key
    from engine.models.loading import load_models
    from toyworld.evaluate import preset_edit_defaults
    from toyworld.scenes import edit_case

    torch.set_num_threads(args.threads)
    defaults = preset_edit_defaults(args.models)
    models = load_models(args.models, device="cpu")
    store = StepTimes(Path(tempfile.mkdtemp()) / "step_times.json")
    key = store_key(models.device, models.preset)
    rows = []
    for quality in args.configs.split(",") if args.configs != "all" else list(MODES):
        for number, index in enumerate((0, 1)):
            case = edit_case(args.first_scene + index, int(models.image_size))
            params = resolve_params(quality, {"prompt": case.prompt, "seed": 5}, defaults)
            times = store.get(key)
            estimate = estimate_seconds(params, times)
            steps_only = estimate_seconds(params, {k: v for k, v in times.items() if k in KINDS})
            timer = StepTimer(store, key)
            start, cpu = time.perf_counter(), time.process_time()
            edit(case.image, case.mask, models, params, timer=timer)
            timer.save()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            row = {
                "quality": quality,
                "edit": number + 1,
                "estimate_s": estimate,
                "steps_only_estimate_s": steps_only,
                "wall_s": wall,
                "cpu_s": cpu,
                "stored": store.get(key),
            }
            if estimate is not None:
                row["error"] = estimate / wall - 1
                row["steps_only_error"] = steps_only / wall - 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.unlink(store.path)
    return {"rows": rows, "load_average": os.getloadavg()}


def _cpu_seconds(work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def run_full(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from bench.edit_bench import build_full, build_tiny
    from engine.editing.paper.blended import ClipGuidance, GuidanceSettings, blended_diffusion
    from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
    from engine.editing.shared.ranking import score_candidates

    torch.set_num_threads(args.threads)
    if args.times:  # the step times of an earlier run: recompute the plan (e.g. after changing a mode)
        return _full_rows(
            json.loads(Path(args.times).read_text())["times"], "full (step times from a file)", args
        )
    device = torch.device("cpu")
    # --dry-run: the tiny architectures stand in, to check the script in seconds
    unet, clip, diffusion_for, size, _flags, _clip_config = (build_tiny if args.dry_run else build_full)(
        device
    )
    generator = torch.Generator().manual_seed(0)
    init = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    text = torch.nn.functional.normalize(
        torch.randn(1, int(_clip_config["embed_dim"]), generator=generator), dim=-1
    )
    diffusion = diffusion_for("100")
    skip = diffusion.num_timesteps - 1  # one step

    def step(guided: bool, amp: Optional[torch.dtype], aug: int = 8, grad: str = "unet") -> None:
        settings = GuidanceSettings.from_params(EditParams(guidance_grad=grad))
        augment = ExtendingAugmentations(clip.image_size, aug)
        guidance = ClipGuidance(clip, text, augment, settings, amp_dtype=amp) if guided else None
        blended_diffusion(
            unet, diffusion, init, mask, [0], skip, settings=settings, guidance=guidance, amp_dtype=amp
        )

    def clip_work(aug: int, amp: Optional[torch.dtype]) -> None:
        images = init.clone().requires_grad_(True)
        from engine.editing.paper.blended import autocast_context

        with autocast_context(device, amp):
            loss = (
                clip_distances(
                    clip,
                    images * mask,
                    text,
                    ExtendingAugmentations(clip.image_size, aug),
                    [torch.Generator().manual_seed(1)],
                )
                .float()
                .sum()
            )
        torch.autograd.grad(loss, images)

    times: Dict[str, Dict[str, float]] = {}
    step(False, None)  # warm-up (first-touch allocations), untimed
    precisions = {"fp32": None, "bf16": torch.bfloat16}
    for precision in args.precisions.split(","):
        amp = precisions[precision]
        # the paper's guided step and the x0-guided one (issue 23) side by side in one run
        measured = {
            "guided_aug8": _cpu_seconds(lambda amp=amp: step(True, amp)),
            "guided_x0_aug8": _cpu_seconds(lambda amp=amp: step(True, amp, grad="x0")),
            "unguided": _cpu_seconds(lambda amp=amp: step(False, amp)),
        }
        for aug in sorted({max(1, round(8 * m.aug_fraction)) for m in MODES.values()} | {4, 8}):
            measured[f"clip_aug{aug}"] = _cpu_seconds(lambda aug=aug, amp=amp: clip_work(aug, amp))
        with torch.no_grad():
            measured["score"] = _cpu_seconds(lambda: score_candidates(clip, init, mask, text))
        times[precision] = measured
        print(f"{precision}: {json.dumps({k: round(v, 2) for k, v in measured.items()})}", flush=True)

    return _full_rows(times, "tiny (dry run)" if args.dry_run else "full", args)


def _full_rows(times: Dict[str, Dict[str, float]], size: str, args: argparse.Namespace) -> Dict[str, Any]:
    rows = []
    configs = {name: resolve_params(name, {"batch_size": 1, "iterations_num": 1}) for name in MODES}
    configs["paper, guidance_grad x0"] = resolve_params("paper", {"guidance_grad": "x0"})
    for precision, measured in times.items():
        for name, params in configs.items():
            work = step_plan(params, respaced_steps(params.timestep_respacing))
            # a step file from before issue 23 has no x0 step: the cost model's share stands in
            kind = "guided_x0_aug8" if params.guidance_grad == "x0" else "guided_aug8"
            guided_step = measured.get(kind, measured["guided_aug8"] * X0_SHARE)
            clip_kept = measured.get(f"clip_aug{params.aug_num}")
            if clip_kept is None:
                raise SystemExit(f"no CLIP time for {params.aug_num} views in the step times: measure again")
            guided_step += clip_kept - measured["clip_aug8"]
            seconds = (
                work.candidate_steps(True) * guided_step + work.candidate_steps(False) * measured["unguided"]
            )
            rows.append(
                {
                    "precision": precision,
                    "mode": name,
                    "cpu_s_per_candidate": seconds,
                    "unet_equivalents": unet_equivalents(params, respaced_steps(params.timestep_respacing)),
                    "guided_steps": work.candidate_steps(True),
                    "unguided_steps": work.candidate_steps(False),
                }
            )
    paper = {r["precision"]: r["cpu_s_per_candidate"] for r in rows if r["mode"] == "paper"}
    fp32_paper = paper["fp32"]
    for row in rows:
        row["ratio_to_paper_fp32"] = row["cpu_s_per_candidate"] / fp32_paper
        print(
            f"| {row['mode']} | {row['precision']} | {row['unet_equivalents']:.1f} | "
            f"{row['cpu_s_per_candidate']:.0f} | {row['ratio_to_paper_fp32']:.3f} |"
        )
    return {
        "size": size,
        "threads": args.threads,
        "times": times,
        "rows": rows,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("toy", "full", "estimate"))
    parser.add_argument("--models", default=str(ROOT / "resources" / "models" / "toy"))
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--first-scene", type=int, default=0)
    parser.add_argument("--configs", default="all", help="comma-separated labels, or all")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar='LABEL=QUALITY:{"steps": 0.25, "aug_num": 4}',
        help="another configuration: a mode plus explicit options (steps: fraction of the schedule)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="full: use the tiny architectures (seconds)")
    parser.add_argument("--precisions", default="fp32,bf16", help="full: comma list of fp32, bf16")
    parser.add_argument("--times", help="full: reuse the step times of an earlier --json result")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    start = time.time()
    result = {"toy": run_toy, "full": run_full, "estimate": run_estimate}[args.what](args)
    result["wall_s"] = time.time() - start
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
