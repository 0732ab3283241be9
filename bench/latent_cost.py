"""Full-size cost of a Blended Latent Diffusion candidate against a paper-mode one, in one run (issue 31).

Random weights in the real architectures, nothing downloaded, one torch thread, fp32, process CPU seconds:

  paper   one guided ADM-256 step (UNet with gradient + 8 ViT-B/16 views), bench/edit_bench.py's build_full;
          a paper-mode candidate is 75 such steps (100 respaced, 25 skipped)
  sd15    one SD 1.5 UNet step at 512 px (64x64x4 latents) with classifier-free guidance (batch 2), the VAE
          encode and decode at 512 and the text encoder (ViT-L/14 text tower) once; a candidate at the
          default schedule is 38 steps + one decode (+ the job's one encode and prompt, counted whole here)
  sdxl    (--sdxl) one SDXL base UNet step at 1024 px (128x128x4 latents), batch 2, text_time conditioning

A whole full-size candidate takes many minutes on a CPU, so the candidate figures are the step times times
the step counts. Each figure is a steady-state call: one untimed call first (the first call of a process also
pays one-off set-up: kernel selection, allocations, which a 38- or 75-step candidate pays once, not per
step), then the least of ``--repeats`` timed calls. Nothing is asserted; a table goes to stdout and the
figures to --json.

    PYTHONPATH=. .venv/bin/python bench/latent_cost.py \\
        --json docs/results/latent/latent-cost-cpu.json [--sdxl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_STEPS = 75  # respacing 100, skip 25
LATENT_STEPS = 38  # DDIM 50, blending start 0.25 (strength 0.75)

SD15_UNET: Dict[str, Any] = {  # Stable Diffusion 1.5's unet/config.json (the diffusers defaults but these)
    "sample_size": 64,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD_VAE: Dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}
SDXL_UNET: Dict[str, Any] = {
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".strip()


REPEATS = [2]  # timed calls after the untimed one (--repeats)


def cpu_seconds(work: Callable[[], Any]) -> float:
    """Process CPU seconds of one steady-state call: after an untimed first call, the least of REPEATS."""
    work()
    times = []
    for _ in range(REPEATS[0]):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def paper_step() -> float:
    from bench.edit_bench import build_full
    from engine.editing.paper.blended import ClipGuidance, GuidanceSettings, blended_diffusion
    from engine.editing.shared.augment import ExtendingAugmentations
    from engine.editing.shared.params import EditParams

    unet, clip, diffusion_for, size, _flags, clip_config = build_full(torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    init = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    text = torch.nn.functional.normalize(
        torch.randn(1, int(clip_config["embed_dim"]), generator=generator), dim=-1
    )
    diffusion = diffusion_for("100")

    settings = GuidanceSettings.from_params(EditParams())
    guidance = ClipGuidance(clip, text, ExtendingAugmentations(clip.image_size, 8), settings)

    def step() -> None:
        blended_diffusion(
            unet,
            diffusion,
            init,
            mask,
            [0],
            diffusion.num_timesteps - 1,
            settings=settings,
            guidance=guidance,
        )

    return cpu_seconds(step)


def unet_step(
    config: Dict[str, Any], states: int, extra: Optional[Dict[str, Any]] = None
) -> Dict[str, float]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval().requires_grad_(False)
    size = int(config["sample_size"])
    z = torch.randn(2, 4, size, size)  # classifier-free guidance: the unconditional and the prompted half
    hidden = torch.randn(2, 77, states)
    with torch.no_grad():
        seconds = cpu_seconds(lambda: unet(z, 500, encoder_hidden_states=hidden, added_cond_kwargs=extra))
    parameters = sum(p.numel() for p in unet.parameters())
    return {"step": seconds, "parameters": parameters}


def vae_pass() -> Dict[str, float]:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE).eval().requires_grad_(False)
    image = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.no_grad():
        encode = cpu_seconds(lambda: vae.encode(image).latent_dist.mean)
        decode = cpu_seconds(lambda: vae.decode(torch.randn(1, 4, 64, 64)).sample)
    return {"encode": encode, "decode": decode}


def text_pass() -> float:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
    )
    model = CLIPTextModel(config).eval().requires_grad_(False)
    ids = torch.randint(0, 49408, (2, 77))
    with torch.no_grad():
        return cpu_seconds(lambda: model(ids))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdxl", action="store_true", help="also one SDXL step at 1024 px (about 10 GB)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the untimed first one")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    REPEATS[0] = max(1, args.repeats)
    figures: Dict[str, Any] = {
        "machine": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "repeats": REPEATS[0],
    }
    figures["paper_guided_step"] = paper_step()
    print(f"ADM-256 guided step: {figures['paper_guided_step']:.1f} CPU s", flush=True)
    figures["sd15_unet"] = unet_step(SD15_UNET, 768)
    print(f"SD 1.5 CFG step: {figures['sd15_unet']['step']:.1f} CPU s", flush=True)
    figures["sd15_vae"] = vae_pass()
    figures["sd15_text"] = text_pass()
    print(f"SD VAE at 512: {figures['sd15_vae']}, text encoder {figures['sd15_text']:.2f} s", flush=True)
    if args.sdxl:
        extra = {
            "text_embeds": torch.randn(2, 1280),
            "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2),
        }
        figures["sdxl_unet"] = unet_step(SDXL_UNET, 2048, extra)
        print(f"SDXL CFG step: {figures['sdxl_unet']['step']:.1f} CPU s", flush=True)
    paper = PAPER_STEPS * figures["paper_guided_step"]
    vae, text = figures["sd15_vae"], figures["sd15_text"]
    sd15 = LATENT_STEPS * figures["sd15_unet"]["step"] + vae["decode"] + vae["encode"] + text
    figures["candidate_seconds"] = {
        "paper_adm256": paper,
        "latent_sd15": sd15,
        "sd15_over_paper": sd15 / paper,
    }
    print("| candidate at the default schedule | CPU s | vs paper |\n|---|---:|---:|")
    print(f"| paper, ADM-256, {PAPER_STEPS} guided steps | {paper:.0f} | 1.000 |")
    print(
        f"| latent, SD 1.5 512 px, {LATENT_STEPS} CFG steps + VAE + text | {sd15:.0f} | {sd15 / paper:.3f} |"
    )
    if args.sdxl:
        sdxl = LATENT_STEPS * figures["sdxl_unet"]["step"]
        figures["candidate_seconds"]["latent_sdxl_unet_only"] = sdxl
        row = f"latent, SDXL 1024 px, {LATENT_STEPS} CFG steps (UNet only)"
        print(f"| {row} | {sdxl:.0f} | {sdxl / paper:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
