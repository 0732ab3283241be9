"""Train the toy preset in one seeded command: ``python -m toyworld.train --out resources/models/toy``.

Three stages, in this order: ``adm`` (the single-scale ADM on whole 32 px scenes), ``clip`` (the CLIP, on
that ADM's guidance views), ``multiscale`` (the ADM trained further on whole scenes mixed with crops of
scenes drawn 2-8x larger, for the detail stage's tiles). ``--stages latent`` trains the other toy preset,
``toy-latent`` (toyworld/train_latent.py), on its own. Writes ``toy_clip.pt`` and ``toy_unet.pt`` (plain
state_dicts; the ADM after the last of its stages that ran), ``preset.json`` in the engine's registry
format (flags, config, files, SHA-256, sizes, plus the toy's recommended ``edit_defaults``) and
``training_samples.png`` (unguided samples of the trained ADM, to see that it draws scenes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Recommended editing settings for the toy models (the algorithm is the engine's, unchanged): the step
# count is lowered so a CPU edit takes seconds, and the CLIP weight halved, since the reference's 1000
# overshoots the toy CLIP towards washed-out colours (measured with toyworld.evaluate). evaluate.py and
# make_grid.py use these.
TOY_EDIT_DEFAULTS: dict = {
    "timestep_respacing": "50",
    "skip_timesteps": 10,
    "clip_guidance_lambda": 70,
    "range_lambda": 50,
    "aug_num": 8,
    "batch_size": 4,
    "iterations_num": 1,
}

STAGES = ("adm", "clip", "multiscale", "latent")  # latent: the toy-latent preset (toyworld/train_latent.py)
# The multiscale stage's defaults (docs/detail.md: chosen on the detail stage's selection scenes 0-29).
MULTISCALE_STEPS = 800
MULTISCALE_LR = 5e-4
ADM_KEYS = ("adm_steps", "adm_batch", "adm_precision", "adm_ema", "adm_seconds", "adm_cpu_seconds")

CLIP_FILE = "toy_clip.pt"
UNET_FILE = "toy_unet.pt"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO_ROOT / "resources" / "models" / "toy"
# The built-in preset "toy" (engine/models/presets/toy.json) points at the shipped folder.
BUILTIN_PRESET = REPO_ROOT / "engine" / "models" / "presets" / "toy.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_atomic(write, target: Path) -> None:
    """Write through a temporary file in the same folder and rename, so a failed run leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; these are shared artifacts
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preset_data(
    out: Path, clip_config: dict, model_flags: dict, diffusion_flags: dict, training: dict
) -> dict:
    unet_path, clip_path = out / UNET_FILE, out / CLIP_FILE
    return {
        "name": "toy",
        "description": "tiny ADM (32 px) + CLIP trained on synthetic shapes (toyworld); seconds on a CPU",
        "diffusion": {
            "name": "toy-adm32",
            "kind": "diffusion",
            "file": UNET_FILE,
            "sha256": sha256_of(unet_path),
            "size_bytes": unet_path.stat().st_size,
            "model_flags": model_flags,
            "diffusion_flags": diffusion_flags,
            "description": "toy ADM, 32x32, learned sigma, trained by toyworld/train.py",
        },
        "clip": {
            "name": "toy-clip32",
            "kind": "clip",
            "file": CLIP_FILE,
            "sha256": sha256_of(clip_path),
            "size_bytes": clip_path.stat().st_size,
            "config": clip_config,
            "description": "toy CLIP (open_clip.CLIP, ModifiedResNet 32 px), standard tokenizer",
        },
        "edit_defaults": TOY_EDIT_DEFAULTS,
        "training": training,
    }


def write_presets(out: Path, data: dict) -> list[Path]:
    """``preset.json`` in the folder; plus the built-in ``toy`` preset when the folder is the shipped one."""
    text = json.dumps(data, indent=2) + "\n"
    _save_atomic(lambda p: Path(p).write_text(text), out / "preset.json")
    written = [out / "preset.json"]
    if out.resolve() == SHIPPED_DIR:
        builtin = {**data, "directory": SHIPPED_DIR.relative_to(REPO_ROOT).as_posix()}
        builtin.pop("name", None)
        _save_atomic(lambda p: Path(p).write_text(json.dumps(builtin, indent=2) + "\n"), BUILTIN_PRESET)
        written.append(BUILTIN_PRESET)
    return written


def _multiscaled(out: Path, training: dict) -> bool:
    """Whether the ADM file in ``out`` is past its multiscale stage, not the single-scale ADM it started from.

    A folder whose record predates the stage (no ``adm_sha256``) holds the single-scale ADM."""
    base = training.get("adm_sha256")
    return bool(base) and sha256_of(out / UNET_FILE) != base


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (else autocast would emulate it, slowly)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def clip_figures(clip) -> dict:
    """Zero-shot colour and shape accuracy of the trained CLIP on clean held-out shapes (both views)."""
    import torch

    from engine.models.clip import ClipModel
    from toyworld.clip_check import zero_shot
    from toyworld.train_clip import TOY_CLIP_CONFIG

    wrapped = ClipModel(clip, TOY_CLIP_CONFIG, torch.device("cpu"))
    figures = {}
    for masked in (True, False):
        result = zero_shot(wrapped, 360, masked=masked)
        figures[result["view"]] = {k: round(result[k], 3) for k in ("colour", "shape", "both")}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="resources/models/toy", help="folder for the artifacts and preset.json"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-steps", type=int, default=1200)
    parser.add_argument("--adm-steps", type=int, default=2000)
    parser.add_argument("--adm-batch", type=int, default=64)
    parser.add_argument("--adm-ema", type=float, default=0.995, help="EMA decay of the ADM's weights")
    parser.add_argument("--multiscale-steps", type=int, default=MULTISCALE_STEPS)
    parser.add_argument("--multiscale-lr", type=float, default=MULTISCALE_LR)
    parser.add_argument(
        "--adm-precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="the ADM under CPU bf16 autocast; auto: bf16 where the CPU has it natively (AMX, AVX-512 BF16)",
    )
    parser.add_argument(
        "--stages",
        default="adm,clip,multiscale",
        help=(
            "which stages to run, always in the order adm, clip, multiscale (the CLIP learns from the"
            " single-scale ADM's views); a stage left out takes its file from --out: 'clip' or 'multiscale'"
            " without 'adm' need the single-scale ADM there (an earlier run's --stages adm or adm,clip)"
        ),
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the budget is 2 cores)")
    parser.add_argument(
        "--clip-threads",
        type=int,
        default=1,
        help="torch CPU threads of the CLIP stage: float sums depend on the thread count, and the shipped"
        " CLIP was trained on 1 (with it this command reproduces the file bit for bit)",
    )
    parser.add_argument(
        "--latent-out",
        default="resources/models/toy-latent",
        help="--stages latent: the toy-latent preset's folder (diffusers layout; toyworld/train_latent.py)",
    )
    parser.add_argument(
        "--presets-only",
        action="store_true",
        help="train nothing: rewrite the preset files (digests, sizes) for the model files already in --out",
    )
    args = parser.parse_args(argv)
    counts = (args.clip_steps, args.adm_steps, args.adm_batch, args.threads, args.clip_threads)
    if min(counts) < 1 or args.multiscale_steps < 0:
        parser.error(
            "--clip-steps, --adm-steps, --adm-batch and the thread counts must be at least 1,"
            " --multiscale-steps at least 0"
        )
    if not 0 < args.multiscale_lr < 1:
        parser.error(f"--multiscale-lr must be above 0 and below 1, got {args.multiscale_lr}")
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if not stages or stages - set(STAGES):
        parser.error(f"--stages takes any of {', '.join(STAGES)}, got {args.stages!r}")
    if "latent" in stages:
        if stages != {"latent"}:
            parser.error("--stages latent trains another preset: run it on its own")
        from toyworld import train_latent

        return train_latent.main(["--out", args.latent_out, "--seed", str(args.seed)])
    out = Path(args.out)
    if "clip" not in stages and not (out / CLIP_FILE).is_file():
        parser.error(f"--stages without clip needs {out / CLIP_FILE} from an earlier run")
    if "adm" not in stages and not (out / UNET_FILE).is_file():
        parser.error(f"--stages without adm needs {out / UNET_FILE} from an earlier run")
    previous: dict = {}
    if (out / "preset.json").is_file():
        previous = json.loads((out / "preset.json").read_text()).get("training", {})
    if "adm" not in stages and stages & {"clip", "multiscale"} and _multiscaled(out, previous):
        parser.error(
            f"{out / UNET_FILE} has had its multiscale stage already; 'clip' and 'multiscale' go on from the"
            " single-scale ADM: add 'adm' to --stages"
        )
    out.mkdir(parents=True, exist_ok=True)
    if args.presets_only:
        from toyworld.train_adm import TOY_DIFFUSION_FLAGS, TOY_MODEL_FLAGS
        from toyworld.train_clip import TOY_CLIP_CONFIG

        for name in (CLIP_FILE, UNET_FILE):
            if not (out / name).is_file():
                parser.error(f"--presets-only needs {out / name}")
        data = preset_data(out, TOY_CLIP_CONFIG, TOY_MODEL_FLAGS, TOY_DIFFUSION_FLAGS, previous)
        for path in write_presets(out, data):
            print(f"wrote {path}")
        return 0

    # Passive OpenMP waiting: on cores shared with other work, spinning threads cost far more than they save.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from toyworld.train_adm import TOY_DIFFUSION_FLAGS, TOY_MODEL_FLAGS, sample, train_adm, train_multiscale
    from toyworld.train_clip import TOY_CLIP_CONFIG, train_clip

    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.time()
    training = {
        "command": "python -m toyworld.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "threads": args.threads,
        "clip_threads": args.clip_threads,
        "torch": torch.__version__,
    }
    # the ADM's stages under CPU bf16 autocast where asked, or by default where the CPU has it natively
    bf16 = args.adm_precision == "bf16" or (args.adm_precision == "auto" and cpu_has_native_bf16())
    if "adm" in stages:
        adm_started, cpu_started = time.time(), time.process_time()
        unet = train_adm(
            args.adm_steps,
            batch_size=args.adm_batch,
            seed=args.seed,
            bf16=bf16,
            ema_decay=args.adm_ema,
            log=log,
        )
        _save_atomic(lambda p: torch.save(unet.state_dict(), p), out / UNET_FILE)
        training.update(
            adm_sha256=sha256_of(out / UNET_FILE),
            adm_steps=args.adm_steps,
            adm_batch=args.adm_batch,
            adm_precision="bf16" if bf16 else "fp32",
            adm_ema=args.adm_ema,
            adm_seconds=round(time.time() - adm_started),
            adm_cpu_seconds=round(time.process_time() - cpu_started),
        )
        log(f"adm done in {training['adm_seconds']}s ({training['adm_cpu_seconds']}s CPU)")
    else:
        from engine.models.loading import read_state_dict
        from engine.models.unet import unet_from_flags

        unet = unet_from_flags(TOY_MODEL_FLAGS)
        unet.load_state_dict(read_state_dict(out / UNET_FILE))
        unet.eval()
        training.update({k: previous[k] for k in ADM_KEYS if k in previous})
        training.setdefault("adm_sha256", sha256_of(out / UNET_FILE))

    clip_keys = ("clip_steps", "clip_seconds", "clip_cpu_seconds", "clip_zero_shot")
    if "clip" in stages:
        clip_started, cpu_started = time.time(), time.process_time()
        torch.set_num_threads(args.clip_threads)
        clip = train_clip(args.clip_steps, seed=args.seed, log=log, unet=unet)
        _save_atomic(lambda p: torch.save(clip.state_dict(), p), out / CLIP_FILE)
        training.update(
            clip_steps=args.clip_steps,
            clip_seconds=round(time.time() - clip_started),
            clip_cpu_seconds=round(time.process_time() - cpu_started),
            clip_zero_shot=clip_figures(clip),
        )
        log(f"clip done in {training['clip_seconds']}s ({training['clip_cpu_seconds']}s CPU)")
        log(f"clip zero-shot on held-out shapes: {training['clip_zero_shot']}")
    else:
        training.update({k: previous[k] for k in clip_keys if k in previous})
    torch.set_num_threads(args.threads)

    if "multiscale" in stages and args.multiscale_steps:
        multiscale_started, cpu_started = time.time(), time.process_time()
        unet = train_multiscale(
            unet,
            args.multiscale_steps,
            batch_size=args.adm_batch,
            seed=args.seed,
            lr=args.multiscale_lr,
            ema_decay=args.adm_ema,
            bf16=bf16,
            log=log,
        )
        _save_atomic(lambda p: torch.save(unet.state_dict(), p), out / UNET_FILE)
        training.update(
            multiscale_steps=args.multiscale_steps,
            multiscale_lr=args.multiscale_lr,
            multiscale_precision="bf16" if bf16 else "fp32",
            multiscale_seconds=round(time.time() - multiscale_started),
            multiscale_cpu_seconds=round(time.process_time() - cpu_started),
        )
        seconds, cpu_seconds = training["multiscale_seconds"], training["multiscale_cpu_seconds"]
        log(f"multiscale done in {seconds}s ({cpu_seconds}s CPU)")

    samples = sample(unet, 16, respacing="25", seed=args.seed)
    grid = ((samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    grid = grid.view(2, 8, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(64, 256, 3).numpy()
    from PIL import Image

    Image.fromarray(grid).resize((512, 128), Image.Resampling.NEAREST).save(out / "training_samples.png")

    data = preset_data(out, TOY_CLIP_CONFIG, TOY_MODEL_FLAGS, TOY_DIFFUSION_FLAGS, training)
    for path in write_presets(out, data):
        log(f"wrote {path}")
    log(f"total {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
