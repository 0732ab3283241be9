"""Full-size cost of a Blended Latent Diffusion candidate against a paper-mode one, in one run (issue 31).

Random weights in the real architectures, nothing downloaded, one torch thread, fp32, process CPU seconds:

  paper   one guided ADM-256 step (UNet with gradient + 8 ViT-B/16 views), bench/edit_bench.py's build_full;
          a paper-mode candidate is 75 such steps (100 respaced, 25 skipped)
  sd15    one SD 1.5 UNet step at 512 px (64x64x4 latents) with classifier-free guidance (batch 2), the VAE
          encode and decode at 512 and the text encoder (ViT-L/14 text tower) once; a candidate at the
          default schedule is 38 steps + one decode (+ the job's one encode and prompt, counted whole here)
  sdxl    (--sdxl) one SDXL base UNet step at 1024 px (128x128x4 latents), batch 2, text_time conditioning

--precisions fp32,bf16,bf16-clip (issue 38) times the two steps again in each: bf16 is what the engine's
auto picks on a CPU with native bf16 (the ADM UNet's inner blocks converted to bf16 with CLIP in fp32; the
SD 1.5 UNet under bf16 autocast, engine.editing.shared.running.AutocastUNet); bf16-clip puts CLIP's weights
in bf16 too. Each bf16 figure comes with the relative error of one UNet forward against fp32 (random
weights, the same input).

--few-step (issue 38) adds a 4-step SD 1.5 candidate as an LCM-LoRA runs it (a fused LoRA leaves the UNet's
cost as it is; guidance folded in: one UNet pass of batch 1 a step), the VAE and text encoder as above,
against the paper-mode candidate in the same precision.

A whole full-size candidate takes many minutes on a CPU, so the candidate figures are the step times times
the step counts. Each figure is a steady-state call: one untimed call first (the first call of a process also
pays one-off set-up: kernel selection, allocations, which a 38- or 75-step candidate pays once, not per
step), then the least of ``--repeats`` timed calls. Nothing is asserted; a table goes to stdout and the
figures to --json.

    PYTHONPATH=. .venv/bin/python bench/latent_cost.py \\
        --json docs/results/latent/latent-cost-cpu.json [--sdxl] [--precisions fp32,bf16] [--few-step]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.diagnostics import cpu_name  # noqa: E402 - after the path

PAPER_STEPS = 75  # respacing 100, skip 25
LATENT_STEPS = 38  # DDIM 50, blending start 0.25 (strength 0.75)
FEW_STEPS = 4  # an LCM-LoRA candidate (--few-step): 4 steps at strength 1, no classifier-free guidance

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


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference||, in fp32."""
    return float((output.float() - reference).norm() / reference.norm())


def paper_step(precision: str = "fp32") -> Dict[str, float]:
    """One guided ADM-256 step in ``precision``; off fp32, also one UNet forward's relative error."""
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
    figures: Dict[str, float] = {}
    if precision != "fp32":
        x, t = torch.randn(1, 3, size, size, generator=generator), torch.tensor([500])
        with torch.no_grad():
            reference = unet(x, t)
            unet.set_inner_dtype(torch.bfloat16)  # as engine.editing.shared.running.set_precision does
            figures["unet_relative_error"] = relative_error(unet(x, t), reference)
        if precision == "bf16-clip":
            clip.set_dtype(torch.bfloat16)

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

    figures["step"] = cpu_seconds(step)
    return figures


def unet_step(
    config: Dict[str, Any],
    states: int,
    extra: Optional[Dict[str, Any]] = None,
    precision: str = "fp32",
    batch: int = 2,
) -> Dict[str, float]:
    """One UNet call: batch 2 is a classifier-free-guided step (the unconditional and the prompted half),
    batch 1 a step of a few-step model with its guidance folded in (LCM-LoRA: one pass)."""
    from diffusers import UNet2DConditionModel

    from engine.editing.shared.running import AutocastUNet

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval().requires_grad_(False)
    size = int(config["sample_size"])
    z = torch.randn(batch, 4, size, size)
    hidden = torch.randn(batch, 77, states)
    if extra is not None:
        extra = {key: value[:batch] for key, value in extra.items()}
    figures: Dict[str, float] = {"parameters": sum(p.numel() for p in unet.parameters())}
    run = unet if precision == "fp32" else AutocastUNet(unet, torch.bfloat16, unet)
    with torch.no_grad():
        if precision != "fp32":
            reference = unet(z, 500, encoder_hidden_states=hidden, added_cond_kwargs=extra).sample
            output = run(z, 500, encoder_hidden_states=hidden, added_cond_kwargs=extra).sample
            figures["unet_relative_error"] = relative_error(output, reference)
        inputs = {"encoder_hidden_states": hidden, "added_cond_kwargs": extra}
        figures["step"] = cpu_seconds(lambda: run(z, 500, **inputs))
    return figures


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


def precision_rows(precisions: List[str], figures: Dict[str, Any]) -> Dict[str, Any]:
    """The guided ADM step and the SD 1.5 CFG step in each precision but fp32, with their speed-ups."""
    rows: Dict[str, Any] = {}
    print("| precision | ADM-256 guided step CPU s | x fp32 | SD 1.5 CFG step CPU s | x fp32 |")
    print("|---|---:|---:|---:|---:|")
    paper, sd15 = figures["paper_guided_step"], figures.get("sd15_unet", {}).get("step")
    print(f"| fp32 | {paper:.1f} | 1.00 | {f'{sd15:.1f}' if sd15 else '-'} | 1.00 |")
    for precision in precisions:
        if precision == "fp32":
            continue
        row = {"paper_guided_step": paper_step(precision)}
        if precision == "bf16" and sd15:  # CLIP is not in the SD 1.5 step: bf16-clip would repeat bf16's
            row["sd15_unet"] = unet_step(SD15_UNET, 768, precision=precision)
        row["paper_speedup"] = paper / row["paper_guided_step"]["step"]
        latent = row.get("sd15_unet", {}).get("step")
        row["sd15_speedup"] = sd15 / latent if latent and sd15 else None
        rows[precision] = row
        latent_cells = f"{latent:.1f} | {sd15 / latent:.2f}" if latent else "- | -"
        print(
            f"| {precision} | {row['paper_guided_step']['step']:.1f} | {row['paper_speedup']:.2f} | "
            f"{latent_cells} |",
            flush=True,
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdxl", action="store_true", help="also one SDXL step at 1024 px (about 10 GB)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the untimed first one")
    parser.add_argument(
        "--paper-only", action="store_true", help="only the guided ADM step, in each of --precisions"
    )
    parser.add_argument(
        "--few-step",
        action="store_true",
        help=f"also a {FEW_STEPS}-step SD 1.5 candidate (one UNet pass a step: an LCM-LoRA at guidance 1)",
    )
    parser.add_argument(
        "--precisions", default="fp32", help="comma list of fp32, bf16, bf16-clip: the steps again in each"
    )
    args = parser.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(precisions) - {"fp32", "bf16", "bf16-clip"})
    if unknown or "fp32" not in precisions:
        bad = ", ".join(unknown) or "none"
        parser.error(f"--precisions: fp32 is needed as the reference; unknown: {bad}")
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
    figures["paper_guided_step"] = paper_step()["step"]
    print(f"ADM-256 guided step: {figures['paper_guided_step']:.1f} CPU s", flush=True)
    if args.paper_only:  # the guided ADM step in each precision, nothing else
        figures["precisions"] = precision_rows(precisions, figures)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    figures["sd15_unet"] = unet_step(SD15_UNET, 768)
    print(f"SD 1.5 CFG step: {figures['sd15_unet']['step']:.1f} CPU s", flush=True)
    if len(precisions) > 1:
        figures["precisions"] = precision_rows(precisions, figures)
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
    if args.few_step:
        figures["few_step"] = few_step_rows([p for p in precisions if p != "bf16-clip"], figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def few_step_rows(precisions: List[str], figures: Dict[str, Any]) -> Dict[str, Any]:
    """A FEW_STEPS-step SD 1.5 candidate (one UNet pass a step, the VAE in fp32 and the text encoder once)
    against a paper-mode candidate in the same precision."""
    vae, text = figures["sd15_vae"], figures["sd15_text"]
    rows: Dict[str, Any] = {}
    print(f"| precision | SD 1.5 one-pass step | {FEW_STEPS}-step candidate | paper candidate | ratio |")
    print("|---|---:|---:|---:|---:|")
    for precision in precisions:
        step = unet_step(SD15_UNET, 768, precision=precision, batch=1)
        candidate = FEW_STEPS * step["step"] + vae["decode"] + vae["encode"] + text
        paper_step_seconds = (
            figures["paper_guided_step"]
            if precision == "fp32"
            else figures["precisions"][precision]["paper_guided_step"]["step"]
        )
        paper = PAPER_STEPS * paper_step_seconds
        rows[precision] = {
            "sd15_single_pass_step": step,
            "candidate": candidate,
            "paper_candidate": paper,
            "paper_over_few_step": paper / candidate,
        }
        ratio = f"1/{paper / candidate:.0f}"
        print(f"| {precision} | {step['step']:.1f} s | {candidate:.0f} s | {paper:.0f} s | {ratio} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
