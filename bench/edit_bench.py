"""Speed of the editing loop (engine.editing.paper.blended) against the reference's step, on the same inputs.

For one size (``tiny`` preset, or ``full``: the ADM-256 + ViT-B/16 architectures with random weights) it
measures, in one process on one device:

- our loop: seconds per step and per candidate (one UNet forward with gradient per step);
- the reference-style loop: the authors' step structure, a no-grad UNet forward for the sample plus a
  second forward with gradient inside cond_fn, with the same random draws, so the outputs must be equal;
  the ratio of the two per-step times, and the largest output difference;
- the parts of a step on the same inputs: UNet forward + backward (w.r.t. the input), the CLIP work
  (augmentations, CLIP forward + backward), and what remains: the loop's own overhead;
- FLOPs per step (counted by torch's FlopCounterMode on the meta device), achieved TFLOP/s, and the
  fraction of the device's peak when ``--peak-tflops`` is given or the GPU is known; peak memory.

    PYTHONPATH=. .venv/bin/python bench/edit_bench.py --size tiny --steps 10
    PYTHONPATH=. .venv/bin/python bench/edit_bench.py --size full --steps 1 --batch 1     # CPU: minutes
    PYTHONPATH=. .venv/bin/python bench/edit_bench.py --size full --device cuda --steps 75 --batch 4 \\
        --precisions fp32,bf16

No timing is asserted anywhere; the table goes to stdout (and to --write FILE, appended).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.editing.paper.blended import (  # noqa: E402
    ClipGuidance,
    GuidanceSettings,
    _noise,
    autocast_context,
    blended_diffusion,
    make_generators,
)
from engine.editing.shared.augment import ExtendingAugmentations, clip_distances  # noqa: E402
from engine.editing.shared.params import EditParams  # noqa: E402
from engine.models.devices import amp_dtype_for  # noqa: E402

# dense peak TFLOP/s by GPU name fragment: (fp32 without TF32, bf16/fp16 tensor cores)
KNOWN_PEAKS = {"H100": (67.0, 989.0), "H200": (67.0, 989.0), "A100": (19.5, 312.0)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter


def use_cpu_time() -> None:
    """On a CPU shared with other processes wall time mostly measures them; this process's CPU time
    (user + system) measures the work done. Exact with --threads 1 (more threads add spin-waiting)."""
    global CLOCK
    CLOCK = time.process_time


def build_full(device: torch.device):
    """ADM-256 (uncond) and CLIP ViT-B/16 architectures with seeded random weights (nothing downloaded)."""
    from engine.models.clip import ClipModel, build_open_clip
    from engine.models.diffusion import diffusion_from_flags
    from engine.models.unet import unet_from_flags

    adm = json.loads((ROOT / "engine/models/specs/adm256_uncond.json").read_text())
    clip_spec = json.loads((ROOT / "engine/models/specs/clip_vit_b16.json").read_text())
    torch.manual_seed(0)
    unet = unet_from_flags(adm["model_flags"])
    with torch.no_grad():  # zero-initialised convs would make the output (and the equality check) trivial
        for parameter in unet.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.02)
    unet = unet.to(device).eval().requires_grad_(False)
    if device.type == "cuda" and adm["model_flags"].get("use_fp16"):
        unet.convert_to_fp16()
    clip_net = build_open_clip(clip_spec["config"])
    clip = ClipModel(clip_net.to(device), clip_spec["config"], device)

    def diffusion(respacing: str):
        return diffusion_from_flags({**adm["diffusion_flags"], "timestep_respacing": respacing})

    return (
        unet,
        clip,
        diffusion,
        int(adm["model_flags"]["image_size"]),
        adm["model_flags"],
        clip_spec["config"],
    )


def build_tiny(device: torch.device):
    from engine.models.loading import load_models

    folder = Path(tempfile.gettempdir()) / "blended-diffusion-bench-weights"
    models = load_models("tiny", weights_dir=folder, device=str(device))
    return (
        models.unet,
        models.clip,
        models.diffusion,
        models.image_size,
        models.model_flags,
        models.clip.config,
    )


def count_flops(
    model_flags: dict, clip_config: dict, size: int, batch: int, aug_num: int
) -> Dict[str, float]:
    """FLOPs of one guided step's heavy parts, counted on the meta device (nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.models.clip import build_open_clip
    from engine.models.unet import unet_from_flags

    flags = {**model_flags, "use_fp16": False}
    with torch.device("meta"):
        unet = unet_from_flags(flags).requires_grad_(False)
        clip = build_open_clip(clip_config).requires_grad_(False)
        x = torch.randn(batch, 3, size, size).requires_grad_()
        t = torch.full((batch,), 500.0)
        views = torch.randn(batch * aug_num, 3, clip.visual.image_size[0], clip.visual.image_size[0])
        views.requires_grad_()
    counts = {}
    with FlopCounterMode(display=False) as counter:
        unet(x, t)
    counts["unet_fwd"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        unet(x, t).sum().backward()
    counts["unet_fwd_bwd"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        clip.encode_image(views).sum().backward()
    counts["clip_fwd_bwd"] = counter.get_total_flops()
    counts["ours_step"] = counts["unet_fwd_bwd"] + counts["clip_fwd_bwd"]
    counts["reference_step"] = counts["ours_step"] + counts["unet_fwd"]
    return counts


def reference_style_run(
    unet,
    diffusion,
    init,
    mask,
    seeds,
    skip,
    guidance: ClipGuidance,
    amp_dtype,
    step_times: List[float],
):
    """The authors' step structure: the sample from a no-grad forward, the guidance from a second forward
    with gradient (their cond_fn). Same random draws in the same order as engine.editing.paper.blended."""
    device = init.device
    batch = len(seeds)
    generators = make_generators(seeds, device)
    steps = list(range(diffusion.num_timesteps - skip))[::-1]
    keep = 1 - mask
    init_batch = init.expand(batch, -1, -1, -1)
    t_first = torch.full((batch,), steps[0], device=device, dtype=torch.long)
    x = diffusion.q_sample(init_batch, t_first, noise=_noise(init_batch, generators))
    sync(device)
    last = CLOCK()
    for index in steps:
        t = torch.full((batch,), index, device=device, dtype=torch.long)
        with torch.no_grad():
            with autocast_context(device, amp_dtype):
                sample_output = unet(x, diffusion.model_timesteps(t))
            out = diffusion.p_mean_variance(None, x, t, model_output=sample_output.float())
        with torch.enable_grad():  # cond_fn
            x_grad = x.detach().requires_grad_()
            with autocast_context(device, amp_dtype):
                grad_output = unet(x_grad, diffusion.model_timesteps(t))
            out_grad = diffusion.p_mean_variance(None, x_grad, t, model_output=grad_output.float())
            fac = float(diffusion.sqrt_one_minus_alphas_cumprod[index])
            region = dict(mask=mask, background=init, generators=generators)
            loss = guidance.loss(out_grad["pred_xstart"], x_grad, fac, **region)
            gradient = -torch.autograd.grad(loss, x_grad)[0]
        stepped = diffusion.ddpm_step(out, x, t, gradient=gradient, noise=_noise(x, generators))
        x_bg = diffusion.q_sample(init.expand(batch, -1, -1, -1), t, noise=_noise(x, generators))
        x = stepped["sample"] * mask + x_bg * keep
        pred_x0 = stepped["pred_xstart"]
        sync(device)
        now = CLOCK()
        step_times.append(now - last)
        last = now
    return init * keep + pred_x0 * mask


def time_parts(unet, diffusion, clip, text, augment, init, seeds, amp_dtype, repeat: int) -> Dict[str, float]:
    """UNet forward+backward and the CLIP work alone, on the first step's inputs (best of ``repeat``)."""
    device = init.device
    batch = len(seeds)
    t = torch.full((batch,), diffusion.num_timesteps - 1, device=device, dtype=torch.long)
    x = diffusion.q_sample(init.expand(batch, -1, -1, -1), t)
    views_input = init.expand(batch, -1, -1, -1).clone()
    best = {"unet_fwd_bwd": float("inf"), "clip_work": float("inf")}
    for _ in range(repeat):
        x_grad = x.detach().requires_grad_()
        sync(device)
        start = CLOCK()
        with autocast_context(device, amp_dtype):
            output = unet(x_grad, diffusion.model_timesteps(t))
        torch.autograd.grad(output.float().sum(), x_grad)
        sync(device)
        best["unet_fwd_bwd"] = min(best["unet_fwd_bwd"], CLOCK() - start)
        images = views_input.detach().requires_grad_()
        generators = make_generators(seeds, device)
        sync(device)
        start = CLOCK()
        with autocast_context(device, amp_dtype):
            distances = clip_distances(clip, images, text, augment, generators)
        torch.autograd.grad(distances.float().sum(), images)
        sync(device)
        best["clip_work"] = min(best["clip_work"], CLOCK() - start)
    return best


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_memory_gb(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4, help="candidates per batch")
    parser.add_argument("--steps", type=int, default=10, help="steps to run (the last ones of the schedule)")
    parser.add_argument("--respacing", default="100")
    parser.add_argument("--aug-num", type=int, default=8)
    parser.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16, fp16")
    parser.add_argument("--repeat", type=int, default=1, help="part timings per round (best kept)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both loops (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="auto: process CPU time on the CPU (robust to other load), wall time (synchronised) on GPUs",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference-style loop")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up step (slow CPUs)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the fraction column")
    parser.add_argument("--write", default="", help="append the markdown report to this file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock_name = "wall"
    if args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu"):
        use_cpu_time()
        clock_name = "process CPU time"
    unet, clip, make_diffusion, size, model_flags, clip_config = (
        build_full(device) if args.size == "full" else build_tiny(device)
    )
    if args.compile:
        unet = torch.compile(unet)
    diffusion = make_diffusion(args.respacing)
    skip = diffusion.num_timesteps - args.steps
    generator = torch.Generator().manual_seed(1)
    init = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1).to(device)
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    text = clip.encode_text(["a red ball on the grass"])
    augment = ExtendingAugmentations(clip.image_size, args.aug_num)
    seeds = list(range(100, 100 + args.batch))
    settings = GuidanceSettings.from_params(EditParams())
    flops = count_flops(model_flags, clip_config, size, args.batch, args.aug_num)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"

    lines = [
        f"### edit_bench: {args.size} ({size} px), {device_name}, batch {args.batch}, {args.steps} steps, "
        f"aug_num {args.aug_num}, torch {torch.__version__}, seconds of {clock_name}",
        "",
        "| precision | ours s/step | reference s/step | ratio | max diff vs reference | UNet fwd+bwd s | "
        "CLIP work s | loop overhead s | s/candidate (75 steps) | TFLOP/step | TFLOP/s | % of peak | "
        "peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = None
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        amp_dtype = amp_dtype_for(precision, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if not args.no_warmup:  # allocator, kernels, compile: outside the timings
            blended_diffusion(
                unet,
                diffusion,
                init,
                mask,
                seeds,
                diffusion.num_timesteps - 1,
                settings=settings,
                guidance=ClipGuidance(clip, text, augment, settings, amp_dtype=amp_dtype),
                amp_dtype=amp_dtype,
            )
        # Rounds alternate our loop and the reference-style loop so that load from other processes on a
        # shared machine hits both alike; the best round of each is kept.
        ours_step, ref_step, diff = float("inf"), float("inf"), 0.0
        parts = {"unet_fwd_bwd": float("inf"), "clip_work": float("inf")}
        for round_number in range(args.rounds):
            for name, seconds in time_parts(
                unet, diffusion, clip, text, augment, init, seeds, amp_dtype, args.repeat
            ).items():
                parts[name] = min(parts[name], seconds)
            log(f"{precision} round {round_number + 1}: parts {parts}")
            sync(device)
            marks = [CLOCK()]

            def on_step(_info, marks=marks):
                sync(device)
                marks.append(CLOCK())

            ours = blended_diffusion(
                unet,
                diffusion,
                init,
                mask,
                seeds,
                skip,
                settings=settings,
                guidance=ClipGuidance(clip, text, augment, settings, amp_dtype=amp_dtype),
                amp_dtype=amp_dtype,
                on_step=on_step,
            )
            ours_times = [b - a for a, b in zip(marks, marks[1:])]
            ours_step = min(ours_step, sum(ours_times) / len(ours_times))
            log(f"{precision} round {round_number + 1}: ours {sum(ours_times) / len(ours_times):.3f} s/step")
            if not args.no_reference:
                ref_times: List[float] = []
                reference = reference_style_run(
                    unet,
                    diffusion,
                    init,
                    mask,
                    seeds,
                    skip,
                    ClipGuidance(clip, text, augment, settings, amp_dtype=amp_dtype),
                    amp_dtype,
                    ref_times,
                )
                ref_step = min(ref_step, sum(ref_times) / len(ref_times))
                diff = max(diff, (reference - ours).abs().max().item())
                ref_mean = sum(ref_times) / len(ref_times)
                log(f"{precision} round {round_number + 1}: reference {ref_mean:.3f} s/step")
        if args.no_reference:
            ref_step, diff = float("nan"), float("nan")
        ratio = ref_step / ours_step
        overhead = ours_step - parts["unet_fwd_bwd"] - parts["clip_work"]
        per_candidate = ours_step * 75 / args.batch
        tflops = flops["ours_step"] / ours_step / 1e12
        peak = args.peak_tflops
        if not peak and device.type == "cuda":
            for fragment, (fp32_peak, half_peak) in KNOWN_PEAKS.items():
                if fragment in device_name:
                    peak = fp32_peak if amp_dtype is None else half_peak
        fraction = f"{100 * tflops / peak:.1f}" if peak else "n/a"
        if baseline is None:
            baseline = ours
            precision_note = precision
        else:
            precision_note = (
                f"{precision} (max diff vs {args.precisions.split(',')[0]}: "
                f"{(ours - baseline).abs().max().item():.3g})"
            )
        lines.append(
            f"| {precision_note} | {ours_step:.3f} | {ref_step:.3f} | {ratio:.2f}x | {diff:.2e} | "
            f"{parts['unet_fwd_bwd']:.3f} | {parts['clip_work']:.3f} | {overhead:.3f} | "
            f"{per_candidate:.2f} | "
            f"{flops['ours_step'] / 1e12:.3f} | {tflops:.3f} | {fraction} | {peak_memory_gb(device)} |"
        )
    lines += [
        "",
        f"FLOPs per step (whole batch): UNet forward {flops['unet_fwd'] / 1e12:.3f} T, UNet fwd+bwd "
        f"{flops['unet_fwd_bwd'] / 1e12:.3f} T, CLIP fwd+bwd ({args.batch * args.aug_num} views) "
        f"{flops['clip_fwd_bwd'] / 1e12:.3f} T; the reference step adds one UNet forward "
        f"({flops['reference_step'] / 1e12:.3f} T in all).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
