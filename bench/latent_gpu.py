"""GPU rows for Blended Latent Diffusion (issue 31): the engine's own loop
(engine/editing/latent/blended_latent.py) on the real architectures with random weights, nothing downloaded:
seconds per candidate and peak memory.

  sd15   4 candidates at 512 px (64x64x4 latents), the default schedule (38 of 50 DDIM steps),
         classifier-free guidance (batch 8), VAE encode once and decode per candidate; fp16
  sdxl   1 candidate at 1024 px (128x128x4 latents), the same schedule, SDXL's text_time conditioning;
         bf16 UNet, fp32 VAE (SDXL's VAE overflows in fp16)
  *-lcm4 (issue 38) the same two at a few-step model's schedule: 4 LCM steps from noise (strength 1), the
         guidance folded in (one UNet pass a step, batch = candidates), as an LCM-LoRA (fused: the UNet's
         cost unchanged) or an SDXL few-step model runs

    PYTHONPATH=. python bench/latent_gpu.py --json out.json   # on the GPU machine
    PYTHONPATH=. python bench/latent_gpu.py --dry-run         # anywhere: tiny models, checks the script

The models are built on the device (no CPU initialisation of 2.6 billion parameters). Nothing is asserted;
rows go to stdout as a table and to --json.
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
sys.path.insert(0, str(ROOT / "bench"))

from latent_cost import LATENT_STEPS, SD15_UNET, SD_VAE, SDXL_UNET  # noqa: E402

from engine.editing.latent.blended_latent import blended_latent_diffusion, decode, encode, shrinking_masks  # noqa: E402
from engine.models.latent import Conditioning  # noqa: E402

SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
)
TINY_VAE = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    sample_size=16,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conditioning(family: str, dim: int, device: torch.device, dtype: torch.dtype) -> Conditioning:
    states = torch.randn(1, 77, dim, device=device, dtype=dtype)
    if family != "sdxl":
        return Conditioning(states)
    added = {
        "text_embeds": torch.randn(1, 1280, device=device, dtype=dtype),
        "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]], device=device, dtype=dtype),
    }
    return Conditioning(states, added)


def run_row(
    name: str,
    unet_cfg: Dict[str, Any],
    vae_cfg: Dict[str, Any],
    size: int,
    candidates: int,
    unet_dtype: torch.dtype,
    vae_dtype: torch.dtype,
    device: torch.device,
    steps: int,
    few_step: bool = False,
) -> Dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg).to(unet_dtype).eval().requires_grad_(False)
        vae = AutoencoderKL(**vae_cfg).to(vae_dtype).eval().requires_grad_(False)
    family = "sdxl" if unet_cfg.get("addition_embed_type") == "text_time" else "sd"
    dim = int(unet_cfg["cross_attention_dim"])
    cond, uncond = (conditioning(family, dim, device, unet_dtype) for _ in range(2))
    image = torch.rand(1, 3, size, size, device=device) * 2 - 1
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the default strength 0.75: the first quarter skipped; a few-step model runs all its steps from noise
    total_steps = steps if few_step else max(2, round(steps / 0.75))

    def candidate_batch() -> torch.Tensor:
        source = encode(vae, image).float()
        latent = source.shape[-1]
        masks = shrinking_masks(torch.nn.functional.interpolate(mask, size=(latent, latent)), True)
        kind = LCMScheduler if few_step else DDIMScheduler
        scheduler = kind(num_train_timesteps=1000, **SCHEDULE)
        z = blended_latent_diffusion(
            unet,
            scheduler,
            source,
            masks,
            list(range(candidates)),
            num_steps=total_steps,
            skip=total_steps - steps,
            cond=cond,
            uncond=uncond,
            guidance_scale=1.0 if few_step else 7.5,
        )
        return torch.cat([decode(vae, z[i : i + 1]) for i in range(candidates)])

    candidate_batch()  # warm-up: kernels, cuDNN autotuning
    sync(device)
    started = time.perf_counter()
    out = candidate_batch()
    sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "row": name,
        "size": size,
        "candidates": candidates,
        "steps": steps,
        "sampler": "lcm" if few_step else "ddim",
        "unet_dtype": str(unet_dtype).replace("torch.", ""),
        "vae_dtype": str(vae_dtype).replace("torch.", ""),
        "seconds": round(seconds, 3),
        "seconds_per_candidate": round(seconds / candidates, 3),
        "peak_gib": None if peak is None else round(peak, 2),
        "finite": bool(torch.isfinite(out).all()),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, 3 steps")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    if args.dry_run:
        device = torch.device("cpu")
        tiny_xl = dict(
            TINY_UNET,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=1280 + 6 * 8,
        )
        rows.append(
            run_row("sd15 (tiny)", TINY_UNET, TINY_VAE, 16, 4, torch.float32, torch.float32, device, 3)
        )
        rows.append(run_row("sdxl (tiny)", tiny_xl, TINY_VAE, 16, 1, torch.float32, torch.float32, device, 3))
        rows.append(
            run_row(
                "sd15-lcm4 (tiny)", TINY_UNET, TINY_VAE, 16, 4, torch.float32, torch.float32, device, 4, True
            )
        )
    else:
        device = torch.device(args.device)
        rows.append(
            run_row("sd15", SD15_UNET, SD_VAE, 512, 4, torch.float16, torch.float16, device, LATENT_STEPS)
        )
        torch.cuda.empty_cache()
        xl_vae = dict(SD_VAE, sample_size=1024)
        rows.append(
            run_row("sdxl", SDXL_UNET, xl_vae, 1024, 1, torch.bfloat16, torch.float32, device, LATENT_STEPS)
        )
        torch.cuda.empty_cache()
        rows.append(
            run_row("sd15-lcm4", SD15_UNET, SD_VAE, 512, 4, torch.float16, torch.float16, device, 4, True)
        )
        torch.cuda.empty_cache()
        rows.append(
            run_row("sdxl-lcm4", SDXL_UNET, xl_vae, 1024, 1, torch.bfloat16, torch.float32, device, 4, True)
        )
    print("| row | px | candidates | steps | UNet / VAE | s | s / candidate | peak GiB | finite |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['row']} | {r['size']} | {r['candidates']} | {r['steps']} "
            f"| {r['unet_dtype']} / {r['vae_dtype']} | {r['seconds']} | {r['seconds_per_candidate']} "
            f"| {r['peak_gib']} | {r['finite']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
