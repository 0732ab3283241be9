"""Distil ``toy-latent`` into a few-step student (issue 38): ``python -m toyworld.distill_latent``.

Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models: Synthesizing High-Resolution
Images with Few-Step Inference", Algorithm 1), with the guidance folded in: the student learns to map any
point of the teacher's guided DDIM trajectory (classifier-free guidance at the teacher's preset scale, 25)
straight to its end, so it runs with no guidance of its own, one UNet pass a step, under diffusers'
``LCMScheduler``. At each training step:

  z_{t+k}  the scene's latent noised to a timestep of the teacher's 50-step DDIM grid (skip interval k = 20)
  z_t      one DDIM step of the guided teacher from z_{t+k} (the ODE solver of the paper, k steps at once)
  loss     || f_student(z_{t+k}, t+k) - f_target(z_t, t) ||^2, f = c_skip(t) z + c_out(t) x0(z, eps(z, t))

with the boundary conditions ``LCMScheduler`` uses at inference (sigma_data 0.5, timestep scaling 10) and the
target network an exponential moving average of the student. The student starts as a copy of the teacher;
the VAE, text encoder and tokenizer are the teacher's, copied file for file, so the preset loads through the
same code as every latent preset.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List

REPO_ROOT = Path(__file__).resolve().parent.parent
TEACHER_DIR = REPO_ROOT / "resources" / "models" / "toy-latent"
SHIPPED_DIR = REPO_ROOT / "resources" / "models" / "toy-latent-lcm"
BUILTIN_PRESET = REPO_ROOT / "engine" / "models" / "presets" / "toy-latent-lcm.json"

SOLVER_STEPS = (
    50  # the teacher's default DDIM schedule: the grid the student learns to jump along (--solver-steps)
)
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0  # LCMScheduler's default: its boundary conditions are the ones trained here
TARGET_EMA = 0.95  # the target network's decay (the paper's mu)
STUDENT_EDIT_DEFAULTS: dict = {
    "timestep_respacing": "4",  # LCM steps
    "skip_timesteps": 0,
    "guidance_scale": 1.0,  # folded in: one UNet pass a step
    "mask_shrink": False,
    "batch_size": 4,
    "iterations_num": 1,
}
# the steps an edit runs at any strength (issue 38): 4 chances to blend, so strength 0.5 runs 4 of 8
STUDENT_MIN_STEPS = 4


def boundary(t):
    """c_skip, c_out at timesteps ``t`` (LCMScheduler's get_scalings_for_boundary_condition_discrete)."""
    scaled = t.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def x0_of(z, eps, alpha):
    return (z - (1 - alpha).sqrt() * eps) / alpha.sqrt()


def consistency(unet, z, t, states, alphas):
    """The consistency function f(z, t): the latent the trajectory through z ends at."""
    alpha = alphas[t].view(-1, 1, 1, 1)
    eps = unet(z, t, encoder_hidden_states=states).sample
    c_skip, c_out = boundary(t)
    return c_skip * z + c_out * x0_of(z, eps, alpha)


def distil(teacher, text_encoder, latents, ids, empty_ids, args, generator, log, student=None):
    """The student UNet after ``args.steps`` consistency-distillation steps (from ``student``, else a copy of
    the teacher)."""
    import torch
    from diffusers import DDPMScheduler

    from toyworld.train_latent import SCHEDULE

    alphas = DDPMScheduler(**SCHEDULE).alphas_cumprod
    solver_steps = args.solver_steps
    k = SCHEDULE["num_train_timesteps"] // solver_steps
    grid = (
        torch.arange(1, solver_steps + 1) * k - 1
    )  # 50 steps: 19, 39, ..., 999, the teacher's DDIM timesteps
    student = copy.deepcopy(teacher if student is None else student).train().requires_grad_(True)
    target = copy.deepcopy(student).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    warm = 100

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * step / args.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    with torch.no_grad():
        empty = text_encoder(empty_ids).last_hidden_state
    for step in range(args.steps):
        index = torch.randint(0, latents.shape[0], (args.batch,), generator=generator)
        z0 = latents[index]
        with torch.no_grad():
            states = text_encoder(ids[index]).last_hidden_state
        start = grid[torch.randint(0, solver_steps, (args.batch,), generator=generator)]
        end = (start - k).clamp(min=0)
        noise = torch.randn(z0.shape, generator=generator)
        a_start, a_end = alphas[start].view(-1, 1, 1, 1), alphas[end].view(-1, 1, 1, 1)
        z_start = a_start.sqrt() * z0 + (1 - a_start).sqrt() * noise
        predicted = consistency(student, z_start, start, states, alphas)
        with torch.no_grad():
            both = teacher(
                torch.cat([z_start, z_start]),
                torch.cat([start, start]),
                encoder_hidden_states=torch.cat([empty.expand_as(states), states]),
            ).sample
            eps_uncond, eps_cond = both.chunk(2)
            eps = eps_uncond + args.guidance * (eps_cond - eps_uncond)
            z_end = a_end.sqrt() * x0_of(z_start, eps, a_start) + (1 - a_end).sqrt() * eps  # DDIM step
            wanted = consistency(target, z_end, end, states, alphas)
        loss = torch.nn.functional.mse_loss(predicted, wanted)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for kept, trained in zip(target.parameters(), student.parameters()):
                kept.lerp_(trained, 1 - TARGET_EMA)
        if step % 100 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.5f}")
    return student.eval().requires_grad_(False)


def preset_data(out: Path, training: dict) -> dict:
    from toyworld.train_latent import latent_preset_data

    description = (
        "toy-latent distilled to a few-step latent consistency model (LCM scheduler, no guidance): "
        "a candidate in 4 UNet passes"
    )
    return latent_preset_data(
        out, training, name="toy-latent-lcm", description=description, defaults=STUDENT_EDIT_DEFAULTS,
        scheduler="lcm", min_steps=STUDENT_MIN_STEPS,
    )  # fmt: skip


def write_presets(out: Path, data: dict) -> List[Path]:
    """``preset.json`` in the folder; plus the built-in preset when the folder is the shipped one."""
    from toyworld.train_latent import write_presets as write

    return write(out, data, SHIPPED_DIR, BUILTIN_PRESET)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toyworld.distill_latent", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--teacher", default=str(TEACHER_DIR))
    parser.add_argument("--out", default=str(SHIPPED_DIR))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=20000, help="whole scenes, and as many edit-like ones")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--guidance", type=float, default=25.0, help="the teacher's (toy-latent's preset)")
    parser.add_argument("--solver-steps", type=int, default=SOLVER_STEPS, help="the teacher's DDIM grid")
    parser.add_argument("--resume", help="a student folder to go on from (its unet/), else the teacher")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--presets-only",
        action="store_true",
        help="train nothing: rewrite the preset files (digests, sizes) for the files in --out (a student "
        "trained elsewhere and copied there)",
    )
    args = parser.parse_args(argv)
    if args.presets_only:
        out = Path(args.out)
        previous = json.loads((out / "preset.json").read_text()).get("training", {})
        for path in write_presets(out, preset_data(out, previous)):
            print(f"wrote {path}")
        return 0
    if min(args.scenes, args.steps, args.batch, args.threads) < 1 or args.lr <= 0:
        parser.error("--scenes, --steps, --batch and --threads must be at least 1, --lr above 0")
    if not 1 <= args.solver_steps <= 1000 or 1000 % args.solver_steps:
        parser.error("--solver-steps must divide the 1000 training timesteps")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from toyworld.data import focus_scene_bank, scene_bank
    from toyworld.train_latent import CAPTION_DROPOUT, SCHEDULE

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started, cpu_started = time.time(), time.process_time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {message}", flush=True)

    teacher_dir, out = Path(args.teacher), Path(args.out)
    vae = AutoencoderKL.from_pretrained(teacher_dir / "vae").eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(teacher_dir / "text_encoder").eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(teacher_dir / "tokenizer")
    teacher = UNet2DConditionModel.from_pretrained(teacher_dir / "unet").eval().requires_grad_(False)
    # the teacher's data: whole scenes and edit-like ones, captions dropped as in its training
    images, captions = scene_bank(args.scenes, 32, args.seed)
    focus, focus_captions = focus_scene_bank(args.scenes, 32, args.seed)
    images, captions = torch.cat([images, focus]).float() / 127.5 - 1.0, captions + focus_captions
    dropped = torch.rand(len(captions), generator=generator) < CAPTION_DROPOUT
    texts = ["" if drop else text for drop, text in zip(dropped.tolist(), captions)]

    def tokens(batch: List[str]):
        length = tokenizer.model_max_length
        return tokenizer(batch, padding="max_length", max_length=length, truncation=True, return_tensors="pt")

    with torch.no_grad():
        means = torch.cat(
            [vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)]
        )
    log(f"{len(texts)} scenes encoded")
    previous: dict = {}
    resumed = None
    if args.resume:
        resumed = UNet2DConditionModel.from_pretrained(Path(args.resume) / "unet")
        previous = json.loads((Path(args.resume) / "preset.json").read_text())["training"]
    student = distil(
        teacher,
        text_encoder,
        means * vae.config.scaling_factor,
        tokens(texts).input_ids,
        tokens([""]).input_ids,
        args,
        generator,
        log,
        resumed,
    )
    out.mkdir(parents=True, exist_ok=True)
    for part in ("vae", "text_encoder", "tokenizer"):  # the teacher's own files, byte for byte
        shutil.rmtree(out / part, ignore_errors=True)
        shutil.copytree(teacher_dir / part, out / part)
    student.save_pretrained(out / "unet", safe_serialization=True)
    LCMScheduler(
        **SCHEDULE,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        original_inference_steps=args.solver_steps,
        timestep_scaling=TIMESTEP_SCALING,
    ).save_pretrained(out / "scheduler")
    interval = SCHEDULE["num_train_timesteps"] // args.solver_steps
    command = "python -m toyworld.distill_latent " + " ".join(sys.argv[1:] if argv is None else argv)
    training = {
        "command": command if not previous else f"{previous['command']}; then {command}",
        "method": "latent consistency distillation (Luo et al. 2023, Algorithm 1), guidance folded in",
        "teacher": "toy-latent",
        "teacher_guidance": args.guidance,
        "solver": f"DDIM on the {args.solver_steps}-step grid, one step of {interval} timesteps",
        "target_ema": TARGET_EMA,
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "scenes": args.scenes,
        "focus_scenes": args.scenes,
        "caption_dropout": CAPTION_DROPOUT,
        "steps": args.steps + previous.get("steps", 0),
        "batch": args.batch,
        "lr": args.lr,
        "seconds": round(time.time() - started) + previous.get("seconds", 0),
        "cpu_seconds": round(time.process_time() - cpu_started) + previous.get("cpu_seconds", 0),
    }
    for path in write_presets(out, preset_data(out, training)):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
