"""The detail stage (engine/editing/paper/detail.py) at full size: seconds, tile-steps and peak memory
for square selections, on ADM-256 with seeded random weights (bench/edit_bench.py builds it; nothing
downloaded).

GPU (bench/gpu_report.sh runs it): the whole stage for one candidate at the default strength and schedule
(paper: 100 respaced steps, strength 0.15 -> 15 steps) on 1024x1024 and 2048x2048 selections, batch_size 4
(tiles in batches of 16), bf16; peak memory beside the first pass's (bench/gpu_report.py's paper rows).

CPU (``--cpu-forwards N``): the stage's unit, one tile's UNet forward (no gradient, batch 1, 256 px), timed
N times at 1 thread after a warm-up, CPU time; the stage's cost for a selection is extrapolated from it
(tile-steps x that time), so the CPU figure in docs/detail.md says "extrapolated".

    bash bench/gpu_report.sh                                            # GPU rows, with the others
    PYTHONPATH=. .venv/bin/python bench/detail_bench.py --dry-run        # tiny models on the CPU, seconds
    PYTHONPATH=. .venv/bin/python bench/detail_bench.py --cpu-forwards 2 # ADM-256 forward, 1 thread
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.edit_bench import build_full, build_tiny  # noqa: E402
from engine.editing.paper import detail  # noqa: E402
from engine.editing.shared.params import EditParams  # noqa: E402


def tile_steps(side: int, model_size: int, steps: int) -> int:
    """Tile-steps of one candidate for a side x side selection filled by a disc (the benches' mask)."""
    mask = _disc(side) > 0
    return len(detail.mask_tiles(mask, model_size)) * steps


def _disc(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    radius = np.hypot(xx - side / 2, yy - side / 2) / (side / 2)
    return np.clip((1.0 - radius) / 0.1 * 255, 0, 255).astype(np.uint8)


def run_stage(models, side: int, params: EditParams) -> Dict[str, Any]:
    """The stage for one candidate over a side x side selection (a soft disc), timed."""
    from engine.editing.shared.prepare import prepare_edit
    from engine.editing.shared.running import JobRun, ProgressCounter, UNetChoice, set_precision
    from engine.models.devices import amp_dtype_for

    device = models.device
    generator = np.random.default_rng(0)
    coarse = generator.integers(0, 256, (side // 32, side // 32, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)
    mask = Image.fromarray(_disc(side))
    prepared = prepare_edit(image, mask, models, params, None)
    notes: List[str] = []
    amp = set_precision(models, amp_dtype_for(params.precision, device), notes)
    plan = detail.plan_detail(params, prepared, 1, None, None)
    job = JobRun(
        models, params, notes, UNetChoice(models, params, notes), amp, ProgressCounter(None, plan.work)
    )
    crop = image.resize((models.image_size,) * 2, Image.Resampling.LANCZOS).resize((side, side))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    began, cpu = time.perf_counter(), time.process_time()
    detail.detail(job, prepared, plan, [crop], [0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    return {
        "selection": f"{side}x{side}",
        "tiles": len(plan.tiles),
        "steps": plan.steps,
        "tile_steps": plan.work,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "s_per_tile_step": seconds / max(1, plan.work),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "notes": notes,
    }


def cpu_forwards(count: int) -> Dict[str, Any]:
    """CPU seconds of one ADM-256 tile forward (no gradient, batch 1), 1 thread, after a warm-up."""
    torch.set_num_threads(1)
    unet, *_ = build_full(torch.device("cpu"))
    x = torch.randn(1, 3, 256, 256)
    t = torch.tensor([300])
    times = []
    with torch.no_grad():
        unet(x, t)
        for _ in range(count):
            began = time.process_time()
            unet(x, t)
            times.append(time.process_time() - began)
    per = statistics.median(times)
    steps = round(EditParams.detail_strength * 100)
    rows = {side: tile_steps(side, 256, steps) for side in (1024, 2048)}
    return {
        "cpu_s_per_tile_forward": per,
        "samples": times,
        "detail_steps": steps,
        "extrapolated": {
            f"{side}x{side}": {"tile_steps": n, "cpu_seconds": n * per} for side, n in rows.items()
        },
        "tile_steps_per_megapixel": {f"{s}x{s}": n / (s * s / 1e6) for s, n in rows.items()},
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU (checks the script)")
    parser.add_argument("--cpu-forwards", type=int, default=0, help="time N ADM-256 tile forwards on the CPU")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.cpu_forwards:
        report: Any = cpu_forwards(args.cpu_forwards)
        print(json.dumps(report, indent=1))
    else:
        device = torch.device("cpu" if args.dry_run else args.device)
        unet, clip, diffusion_for, size, flags, _ = (build_tiny if args.dry_run else build_full)(device)
        models = SimpleNamespace(unet=unet, clip=clip, device=device, image_size=size, class_cond=False,
                                 diffusion=diffusion_for, diffusion_flags={})  # fmt: skip
        params = EditParams(detail="on", batch_size=4, precision="fp32" if args.dry_run else "auto")
        if args.dry_run:
            params.timestep_respacing = "10"
        sizes = [int(s) for s in args.sizes.split(",")]
        if args.dry_run:
            sizes = [size * 3]  # a 3x box: a few tiles, seconds on a CPU
        report = [run_stage(models, side, params) for side in sizes]
        print("| detail stage, 1 candidate | tiles | steps | tile-steps | s | s/tile-step | peak GiB |")
        print("|---|---|---|---|---|---|---|")
        for row in report:
            peak = "" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}"
            print(f"| {row['selection']} | {row['tiles']} | {row['steps']} | {row['tile_steps']} | "
                  f"{row['seconds']:.2f} | {row['s_per_tile_step']:.4f} | {peak} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
