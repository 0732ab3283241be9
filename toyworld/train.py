"""Train the toy preset in one seeded command: ``python -m toyworld.train --out resources/models/toy``.

Writes ``toy_clip.pt`` and ``toy_unet.pt`` (plain state_dicts), ``preset.json`` in the engine's registry
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

# Recommended editing settings for the toy models (the algorithm is the engine's, unchanged; only the
# step count is lowered so a CPU edit takes seconds). evaluate.py and make_grid.py use these.
TOY_EDIT_DEFAULTS: dict = {
    "timestep_respacing": "25",
    "skip_timesteps": 5,
    "clip_guidance_lambda": 1000,
    "range_lambda": 50,
    "aug_num": 8,
    "batch_size": 4,
    "iterations_num": 1,
}

CLIP_FILE = "toy_clip.pt"
UNET_FILE = "toy_unet.pt"


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
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preset_data(out: Path, clip_config: dict, model_flags: dict, diffusion_flags: dict, training: dict) -> dict:
    unet_path, clip_path = out / UNET_FILE, out / CLIP_FILE
    return {
        "name": "toy",
        "description": "Tiny ADM (32 px) and CLIP trained on synthetic shape scenes (toyworld); seconds on a CPU",
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
            "description": "toy CLIP (open_clip.CLIP, ViT 32 px / 4 px patches), standard tokenizer",
        },
        "edit_defaults": TOY_EDIT_DEFAULTS,
        "training": training,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="resources/models/toy", help="folder for the artifacts and preset.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-steps", type=int, default=400)
    parser.add_argument("--adm-steps", type=int, default=900)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the budget is 2 cores)")
    args = parser.parse_args(argv)
    if args.clip_steps < 1 or args.adm_steps < 1:
        parser.error("--clip-steps and --adm-steps must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Passive OpenMP waiting: on cores shared with other work, spinning threads cost far more than they save.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from toyworld.train_adm import TOY_DIFFUSION_FLAGS, TOY_MODEL_FLAGS, sample, train_adm
    from toyworld.train_clip import TOY_CLIP_CONFIG, train_clip

    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.time()
    clip = train_clip(args.clip_steps, seed=args.seed, log=log)
    clip_seconds = time.time() - started
    _save_atomic(lambda p: torch.save(clip.state_dict(), p), out / CLIP_FILE)
    log(f"clip done in {clip_seconds:.0f}s")

    adm_started = time.time()
    unet = train_adm(args.adm_steps, seed=args.seed, log=log)
    adm_seconds = time.time() - adm_started
    _save_atomic(lambda p: torch.save(unet.state_dict(), p), out / UNET_FILE)
    log(f"adm done in {adm_seconds:.0f}s")

    samples = sample(unet, 16, seed=args.seed)
    grid = ((samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    grid = grid.view(2, 8, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(64, 256, 3).numpy()
    from PIL import Image

    Image.fromarray(grid).resize((512, 128), Image.Resampling.NEAREST).save(out / "training_samples.png")

    training = {
        "command": "python -m toyworld.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "clip_steps": args.clip_steps,
        "adm_steps": args.adm_steps,
        "threads": args.threads,
        "clip_seconds": round(clip_seconds),
        "adm_seconds": round(adm_seconds),
        "torch": torch.__version__,
    }
    data = preset_data(out, TOY_CLIP_CONFIG, TOY_MODEL_FLAGS, TOY_DIFFUSION_FLAGS, training)
    _save_atomic(lambda p: Path(p).write_text(json.dumps(data, indent=2) + "\n"), out / "preset.json")
    log(f"wrote {out}/preset.json; total {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
