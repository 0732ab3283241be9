"""Everything a GPU can tell about the quality modes (issue 16), in one run that fits a time budget.

For each quality mode and precision (fp32, bf16, fp16), torch.compile off (and on, for the precisions in
``--compile-precisions``): 4 candidates at full size (ADM-256 + ViT-B/16 architectures, random weights, as
bench/edit_bench.py builds them), the mode's whole schedule. Per row: seconds per candidate, peak memory,
achieved TFLOP/s (the mode's UNet-forward equivalents x 2.24 TFLOP) and its fraction of the device's
peak, and the largest difference of the bf16/fp16 results against the fp32 ones of the same mode and seeds.
Rows run cheapest first; once ``--budget`` seconds are spent the remaining rows are listed as skipped.

    bash bench/gpu_report.sh                       # on the GPU machine
    PYTHONPATH=. .venv/bin/python bench/gpu_report.py --dry-run      # CPU check: tiny models, 2 steps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.edit_bench import KNOWN_PEAKS, build_full, build_tiny  # noqa: E402
from bridge.limits import respaced_steps  # noqa: E402
from engine.editing.paper.blended import ClipGuidance, GuidanceSettings, blended_diffusion  # noqa: E402
from engine.editing.paper.modes import MODES, resolve_params, step_plan, unet_equivalents  # noqa: E402
from engine.editing.shared.augment import ExtendingAugmentations  # noqa: E402

UNET_FORWARD_TFLOP = 2.240  # ADM-256 forward, one image (docs/perf-engine-editing.md)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, precision: str) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (fp32, half) in KNOWN_PEAKS.items():
        if fragment in name:
            return fp32 if precision == "fp32" else half
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later rows are skipped")
    parser.add_argument("--compile-precisions", default="bf16", help="comma list, or '' for none")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, 2 steps per mode")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.dry_run:  # a check of the script, not a measurement: no inductor build on the CPU, 2 candidates
        args.compile_precisions, args.candidates = "", min(args.candidates, 2)
    start = time.time()
    device = torch.device("cpu" if args.dry_run else args.device)
    unet, clip, diffusion_for, size, _flags, clip_config = (build_tiny if args.dry_run else build_full)(
        device
    )
    generator = torch.Generator().manual_seed(0)
    init = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1).to(device)
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    text = torch.nn.functional.normalize(
        torch.randn(1, int(clip_config["embed_dim"]), generator=generator), dim=-1
    )
    text = text.to(device)
    seeds = list(range(args.candidates))
    compiled = [p for p in args.compile_precisions.split(",") if p]

    # the modes, and the paper's schedule guided on x0 (issue 23: no backward through the UNet)
    configs = {name: resolve_params(name, {}) for name in MODES}
    configs["paper, guidance_grad x0"] = resolve_params("paper", {"guidance_grad": "x0"})
    jobs = []
    for name, params in configs.items():
        steps = respaced_steps(params.timestep_respacing)
        cost = unet_equivalents(params, steps)
        for precision in DTYPES:
            jobs.append((cost, name, precision, False))
            if precision in compiled:
                jobs.append((cost * 1.5, name, precision, True))  # compiling takes its own time
    jobs.sort(key=lambda job: (job[0], job[3], list(DTYPES).index(job[2])))  # cheapest first, fp32 first

    rows: List[Dict[str, Any]] = []
    results: Dict[tuple, torch.Tensor] = {}
    for _cost, name, precision, use_compile in jobs:
        row: Dict[str, Any] = {"mode": name, "precision": precision, "compile": use_compile}
        rows.append(row)
        if time.time() - start > args.budget:
            row["skipped"] = "time budget spent"
            continue
        params = configs[name]
        diffusion = diffusion_for(params.timestep_respacing)
        skip = int(params.skip_timesteps)
        if args.dry_run:
            skip = diffusion.num_timesteps - 2
        model = torch.compile(unet) if use_compile else unet
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        began = time.perf_counter()
        try:
            settings = GuidanceSettings.from_params(params)
            augment = ExtendingAugmentations(clip.image_size, int(params.aug_num))
            guidance = ClipGuidance(clip, text, augment, settings, amp_dtype=DTYPES[precision])
            out = blended_diffusion(
                model, diffusion, init, mask, seeds, skip, settings=settings, guidance=guidance,
                amp_dtype=DTYPES[precision],
            )  # fmt: skip
            sync(device)
        except Exception as exc:  # noqa: BLE001 - a failing row (e.g. out of memory) must not end the report
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        seconds = time.perf_counter() - began
        work = step_plan(params, diffusion.num_timesteps)
        ran_steps = diffusion.num_timesteps - skip
        equivalents = unet_equivalents(params, diffusion.num_timesteps) * ran_steps / max(1, work.steps)
        tflop = equivalents * UNET_FORWARD_TFLOP * len(seeds)
        peak = peak_tflops(device, precision)
        row.update(
            steps=ran_steps,
            s_per_candidate=seconds / len(seeds),
            peak_memory_gib=(torch.cuda.max_memory_allocated(device) / 2**30)
            if device.type == "cuda"
            else None,
            tflops=tflop / seconds,
            fraction_of_peak=(tflop / seconds / peak) if peak else None,
        )
        results[(name, precision, use_compile)] = out.float().cpu()
        reference = results.get((name, "fp32", False))
        if reference is not None:
            row["max_diff_vs_fp32"] = float((out.float().cpu() - reference).abs().max())
        print(json.dumps(row), flush=True)

    print(f"\n{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (dry run)'}, "
          f"{args.candidates} candidates, {time.time() - start:.0f} s in all")  # fmt: skip
    if args.dry_run:
        print("dry run: tiny models, 2 steps; TFLOP/s use the full-size FLOP count and mean nothing here")
    print("| mode | precision | compile | s/candidate | peak GiB | TFLOP/s | of peak | max diff vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "s_per_candidate" not in row:
            print(f"| {row['mode']} | {row['precision']} | {row['compile']} | "
                  f"{row.get('skipped') or row.get('error')} | | | | |")  # fmt: skip
            continue

        def shown(value: Optional[float], fmt: str) -> str:
            return "" if value is None else format(value, fmt)

        print(
            f"| {row['mode']} | {row['precision']} | {row['compile']} | {row['s_per_candidate']:.2f} | "
            f"{shown(row['peak_memory_gib'], '.2f')} | {row['tflops']:.2f} | "
            f"{shown(row['fraction_of_peak'], '.1%')} | {shown(row.get('max_diff_vs_fp32'), '.3g')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
