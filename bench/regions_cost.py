"""What regions cost a real latent model's step (issue 39): one classifier-free-guided step of Stable
Diffusion 1.5's UNet (random weights, its real configuration, 64x64 latents) with one prompt, against the
same step with K regions in their own cross-attention areas (engine/editing/latent/regional.py), in
process CPU seconds on this machine. The toy world's ratio (toyworld/regions_eval.py) includes fixed
per-edit costs; this is the per-step overhead the UNet itself pays.

    OMP_NUM_THREADS=1 python bench/regions_cost.py --regions 2,4 --precision bf16 \\
        --json docs/results/regions/regions-sd15-step.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.latent_cost import SD15_UNET, cpu_seconds  # noqa: E402
from engine.diagnostics import cpu_name  # noqa: E402
from engine.editing.latent.regional import RegionalPrompts, regional_attention  # noqa: E402
from engine.editing.shared.running import AutocastUNet  # noqa: E402

TOKENS, WIDTH = 77, 768


def region_crops(count: int, side: int) -> np.ndarray:
    """``count`` vertical strips side by side over the middle half of the square, as soft masks."""
    crops = np.zeros((count, side, side), np.float32)
    edges = np.linspace(side // 4, 3 * side // 4, count + 1).astype(int)
    for k in range(count):
        crops[k, side // 4 : 3 * side // 4, edges[k] : edges[k + 1]] = 1.0
    return crops


def step_seconds(unet, regions: int, precision: str) -> float:
    """One guided step: the unconditional row and the prompted one, with ``regions`` regions (0: one
    prompt, no regional attention)."""
    size = int(SD15_UNET["sample_size"])
    z = torch.randn(2, 4, size, size)
    chunks = regions + 1 if regions else 1
    uncond = torch.randn(1, TOKENS, WIDTH).repeat(1, chunks, 1)  # the empty prompt once a chunk
    cond = torch.randn(1, TOKENS * chunks, WIDTH)
    states = torch.cat([uncond, cond])
    run = unet if precision == "fp32" else AutocastUNet(unet, torch.bfloat16, unet)
    prompts = (
        RegionalPrompts(region_crops(regions, size), size, TOKENS, torch.device("cpu")) if regions else None
    )
    with torch.no_grad(), regional_attention(unet, prompts):
        return cpu_seconds(lambda: run(z, 500, encoder_hidden_states=states))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", default="2", help="comma-separated region counts")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval().requires_grad_(False)
    plain = step_seconds(unet, 0, args.precision)
    rows: Dict[str, Any] = {"one prompt": {"step_cpu_seconds": round(plain, 2)}}
    for count in (int(c) for c in args.regions.split(",")):
        seconds = step_seconds(unet, count, args.precision)
        rows[f"{count} regions"] = {"step_cpu_seconds": round(seconds, 2), "ratio": round(seconds / plain, 3)}
        print(f"{count} regions: {seconds:.2f} s against {plain:.2f} s ({seconds / plain:.3f}x)", flush=True)
    report = {
        "command": " ".join(["python bench/regions_cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{cpu_name()}, {platform.system()}, {torch.get_num_threads()} thread(s)",
        "precision": args.precision,
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
