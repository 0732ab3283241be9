"""Train the ``toy-latent`` preset: ``python -m toyworld.train_latent --out resources/models/toy-latent``.

A latent diffusion model in diffusers' own classes on the toy scenes and their captions, small enough to
train in minutes on one CPU thread and to ship:

  vae/           AutoencoderKL, 32 px scenes -> 16x16x4 latents (its scaling_factor from the latents' std)
  text_encoder/  a small transformers CLIPTextModel, trained together with the UNet
  tokenizer/     a CLIPTokenizer whose vocab.json + merges.txt this module writes from the captions' words
  unet/          UNet2DConditionModel with cross-attention on the text encoder's states
  scheduler/     DDIMScheduler with Stable Diffusion's betas (what the engine's latent loop steps with)

Captions are dropped (replaced by "") 10% of the time, so the one model also predicts the unconditional
noise that classifier-free guidance needs. Also ``python -m toyworld.train --stages latent``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO_ROOT / "resources" / "models" / "toy-latent"
BUILTIN_PRESET = REPO_ROOT / "engine" / "models" / "presets" / "toy-latent.json"
TOY_CLIP_DIR = "resources/models/toy"  # the toy CLIP ranks toy-latent's candidates too

# Stable Diffusion's schedule, so the toy exercises the same scheduler settings as sd15
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
MAX_TOKENS = 32  # the longest toy caption is about 20 tokens
CAPTION_DROPOUT = 0.1
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.'-"

# Chosen on the selection scenes 0-29 (docs/latent.md, docs/results/latent/latent-toy-selection-*.json): the
# toy model is small, so its region, an empty background square, is edited from pure noise (strength 1, not
# the authors' 0.75), with strong guidance (25: 20 and 30 each lost a few points of colour or shape) and
# without the shrinking phases (whose dilated masks reach into the background of a 16 px square).
TOY_LATENT_EDIT_DEFAULTS: dict = {
    "timestep_respacing": "50",
    "skip_timesteps": 0,
    "guidance_scale": 25.0,
    "mask_shrink": False,
    "batch_size": 4,
    "iterations_num": 1,
}


def write_tokenizer_files(captions: List[str], folder: Path) -> Tuple[Path, Path]:
    """vocab.json + merges.txt of a byte-pair tokenizer whose merges spell each caption word whole.

    Every single character stays in the vocabulary (alone and word-final), so any prompt tokenizes; the
    merges join each word from its left, one character at a time.
    """
    words = sorted({w for text in captions for w in text.replace(",", " , ").split()})
    vocab: dict = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for char in CHARS:
        add(char)
        add(char + "</w>")
    merges: List[Tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        joined = pieces[0]
        for piece in pieces[1:]:
            if (joined, piece) not in merges:
                merges.append((joined, piece))
            joined += piece
            add(joined)
    for token in SPECIALS:
        add(token)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, indent=0) + "\n")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_path, merges_path


def build_models(vocab_size: int, bos: int, eos: int):
    """The untrained VAE, text encoder and UNet (the configurations the shipped files hold)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        projection_dim=32,
    )
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return vae, text_encoder, unet


def train_vae(vae, images, steps: int, batch: int, generator, log: Callable[[str], None]):
    """Reconstruction (MSE) plus a small KL term: latents stay near unit scale and smooth to sample."""
    return _fit_vae(vae, list(vae.parameters()), 1e-3, images, steps, batch, generator, log, "vae")


def train_decoder(vae, images, steps: int, batch: int, generator, log: Callable[[str], None]):
    """More steps for the decoder alone: the encoder is frozen, so the latents (and the UNet trained on
    them) keep their meaning while the decoder draws sharper outlines (a blurred triangle reads as none)."""
    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for param in decoder:
        param.requires_grad_(True)
    return _fit_vae(vae, decoder, 5e-4, images, steps, batch, generator, log, "decoder")


def _fit_vae(vae, params: list, lr: float, images, steps: int, batch: int, generator, log, name: str):
    """AdamW with cosine decay on reconstruction MSE, over ``params`` of the VAE; the encoder's KL term
    (1e-5) only when the encoder is among them: a frozen encoder is run without gradients."""
    import torch

    train_encoder = any(p.requires_grad for p in vae.encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    vae.train()
    for step in range(steps):
        x = images[torch.randint(0, images.shape[0], (batch,), generator=generator)]
        with torch.set_grad_enabled(train_encoder):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator=generator)
        loss = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
        if train_encoder:
            loss = loss + 1e-5 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"{name} step {step} loss {loss.item():.5f}")
    return vae.eval().requires_grad_(False)


def train_unet(
    unet, text_encoder, latents, ids, steps: int, batch: int, generator, log, cosine: bool = False
):
    """Epsilon prediction on the scaled latents, text encoder trained jointly, an EMA of both kept.

    cosine: the learning rate decays to 0 over ``steps`` after the warm-up (a final stage settles)."""
    import math

    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    noise_schedule = DDPMScheduler(**SCHEDULE)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)

    def factor(s: int) -> float:
        decay = 0.5 * (1.0 + math.cos(math.pi * s / steps)) if cosine else 1.0
        return min(1.0, (s + 1) / 100) * decay

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    ema_unet = EMAModel(unet.parameters(), decay=0.995)
    ema_text = EMAModel(text_encoder.parameters(), decay=0.995)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        index = torch.randint(0, latents.shape[0], (batch,), generator=generator)
        z0 = latents[index]
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (batch,), generator=generator)
        states = text_encoder(ids[index]).last_hidden_state
        eps = unet(noise_schedule.add_noise(z0, noise, t), t, encoder_hidden_states=states).sample
        loss = torch.nn.functional.mse_loss(eps, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())
        if step % 200 == 0 or step == steps - 1:
            log(f"unet step {step} loss {loss.item():.5f}")
    ema_unet.copy_to(unet.parameters())
    ema_text.copy_to(text_encoder.parameters())
    return unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)


def folder_files(out: Path) -> dict:
    """Relative path -> {sha256, size_bytes} of every file the preset loads (the engine verifies them)."""
    from engine.models.weights import sha256_file

    files = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):  # unet/, vae/, ... (SDXL: two more)
        for path in sorted(folder.iterdir()):
            if path.is_file():
                rel = path.relative_to(out).as_posix()
                files[rel] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    return files


def preset_data(out: Path, training: dict) -> dict:
    return latent_preset_data(
        out,
        training,
        name="toy-latent",
        description=(
            "tiny latent diffusion (32 px, 16x16x4 latents) trained on synthetic shapes; seconds on a CPU"
        ),
        defaults=TOY_LATENT_EDIT_DEFAULTS,
    )


def latent_preset_data(
    out: Path,
    training: dict,
    *,
    name: str,
    description: str,
    defaults: dict,
    scheduler: str = "ddim",
    min_steps: int = 0,
) -> dict:
    """A toy latent preset (this module's, or toyworld.distill_latent's student): the folder's files, the
    toy CLIP ranking, the edit defaults and their guidance; ``scheduler`` named only when it is not DDIM,
    ``min_steps`` (the floor of steps run at any strength) only when there is one."""
    sampler = {} if scheduler == "ddim" else {"scheduler": scheduler}
    if min_steps:
        sampler["min_steps"] = min_steps
    return {
        "name": name,
        "method": "latent",
        "description": description,
        "pipeline": {
            "family": "sd",
            "resolution": 32,
            "dtype": "fp32",
            **sampler,
            "guidance_scale": defaults["guidance_scale"],
            "files": folder_files(out),
        },
        "clip": {
            "name": "toy-clip32",
            "kind": "clip",
            "directory": TOY_CLIP_DIR,
            **_toy_clip_entry(),
        },
        "edit_defaults": defaults,
        "training": training,
    }


def _toy_clip_entry() -> dict:
    """The toy CLIP's file entry as the built-in toy preset records it (one source of its digest)."""
    toy = json.loads((REPO_ROOT / "engine" / "models" / "presets" / "toy.json").read_text())
    return {k: toy["clip"][k] for k in ("file", "sha256", "size_bytes", "config")}


def write_presets(
    out: Path, data: dict, shipped_dir: Path = SHIPPED_DIR, builtin_preset: Path = BUILTIN_PRESET
) -> List[Path]:
    """``preset.json`` in the folder; plus the built-in preset when the folder is the shipped one.

    The ranking CLIP's folder is relative to where each file is read from: the models folder, or the
    repository for the built-in preset."""
    toy_clip = (REPO_ROOT / TOY_CLIP_DIR).resolve()
    local = {**data, "clip": {**data["clip"], "directory": os.path.relpath(toy_clip, out.resolve())}}
    (out / "preset.json").write_text(json.dumps(local, indent=2) + "\n")
    written = [out / "preset.json"]
    if out.resolve() == shipped_dir:
        builtin = {**data, "directory": shipped_dir.relative_to(REPO_ROOT).as_posix()}
        builtin.pop("name", None)
        builtin_preset.write_text(json.dumps(builtin, indent=2) + "\n")
        written.append(builtin_preset)
    return written


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toyworld.train_latent", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="resources/models/toy-latent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=20000)
    parser.add_argument("--vae-steps", type=int, default=1000)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--unet-steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--focus-scenes",
        type=int,
        default=0,
        help="add this many edit-like scenes (data.focus_scene_bank: one shape in a square region, its "
        "caption alone) to the UNet's data, as an edit's prompt names one shape",
    )
    parser.add_argument(
        "--crop-scenes",
        type=int,
        default=0,
        help="add this many 32 px crops of scenes drawn 2-8x larger (data.crop_bank), captioned with the "
        "empty prompt, to the UNet's data: the detail stage denoises such tiles of an upscaled candidate",
    )
    parser.add_argument(
        "--decoder-steps", type=int, default=0, help="then train the VAE's decoder alone (encoder frozen)"
    )
    parser.add_argument("--cosine", action="store_true", help="UNet learning rate: cosine decay to 0")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the cores are shared)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the models in --out: no VAE stage, --unet-steps more steps of UNet and text encoder",
    )
    parser.add_argument(
        "--presets-only",
        action="store_true",
        help="train nothing: rewrite the preset files (digests, sizes) for the model files already in --out",
    )
    args = parser.parse_args(argv)
    if min(args.scenes, args.vae_steps, args.batch, args.vae_batch, args.threads) < 1 or args.unet_steps < 0:
        parser.error("--scenes, the step counts, --batch and --threads must be at least 1 (--unet-steps 0)")
    if min(args.focus_scenes, args.crop_scenes) < 0:
        parser.error("--focus-scenes and --crop-scenes must be at least 0")
    out = Path(args.out)
    if args.presets_only:
        previous = json.loads((out / "preset.json").read_text()).get("training", {})
        for path in write_presets(out, preset_data(out, previous)):
            print(f"wrote {path}")
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    from toyworld.data import crop_bank, focus_scene_bank, scene_bank

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started, cpu_started = time.time(), time.process_time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {message}", flush=True)

    images_u8, captions = scene_bank(args.scenes, 32, args.seed)
    if args.focus_scenes:  # after the whole scenes: the VAE (first stage) trains on those alone, as before
        focus_u8, focus_captions = focus_scene_bank(args.focus_scenes, 32, args.seed)
        images_u8, captions = torch.cat([images_u8, focus_u8]), captions + focus_captions
    images = images_u8.float() / 127.5 - 1.0
    vocab_path, merges_path = write_tokenizer_files(captions, out / "tokenizer")
    tokenizer = CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=MAX_TOKENS)
    dropped = torch.rand(len(captions), generator=generator) < CAPTION_DROPOUT
    texts = ["" if drop else text for drop, text in zip(dropped.tolist(), captions)]
    if args.crop_scenes:  # after the captions' dropout: a crop's caption is always the empty prompt
        images = torch.cat([images, crop_bank(args.crop_scenes, 32, args.seed).float() / 127.5 - 1.0])
        texts += [""] * args.crop_scenes
    ids = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    bos, eos = tokenizer.convert_tokens_to_ids(list(SPECIALS))
    vae, text_encoder, unet = build_models(len(tokenizer), bos, eos)
    previous: dict = {}
    if args.resume:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        previous = json.loads((out / "preset.json").read_text())["training"]
        vae = AutoencoderKL.from_pretrained(out / "vae").eval().requires_grad_(False)
        unet = UNet2DConditionModel.from_pretrained(out / "unet")
        text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder")
        vae.register_to_config(scaling_factor=1.0)  # measured again below, on the same latents
    else:
        vae = train_vae(vae, images[: args.scenes], args.vae_steps, args.vae_batch, generator, log)
    with torch.no_grad():
        means = torch.cat(
            [vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)]
        )
    scene_means = means[: len(captions)]  # the scaling factor is the scenes' (crops do not move it)
    scaling = float(1.0 / scene_means.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"latents {tuple(means.shape[1:])}, std {scene_means.std().item():.4f}: scaling_factor {scaling:.5f}")
    if args.decoder_steps:  # after the scaling factor: the encoder, and so the latents, do not change
        vae = train_decoder(vae, images, args.decoder_steps, args.vae_batch, generator, log)
    vae_seconds = time.time() - started if not args.resume or args.decoder_steps else 0.0

    unet, text_encoder = train_unet(
        unet,
        text_encoder,
        means * scaling,
        ids.input_ids,
        args.unet_steps,
        args.batch,
        generator,
        log,
        cosine=args.cosine,
    )
    for model, sub in ((vae, "vae"), (unet, "unet"), (text_encoder, "text_encoder")):
        model.save_pretrained(out / sub, safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    ddim = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    ddim.save_pretrained(out / "scheduler")
    command = "python -m toyworld.train_latent " + " ".join(sys.argv[1:] if argv is None else argv)
    training = {
        "command": command if not previous else f"{previous['command']}; then {command}",
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "scenes": args.scenes,
        "focus_scenes": args.focus_scenes,  # this (last) stage's; the command holds every stage's flags
        "crop_scenes": args.crop_scenes,
        "lr_schedule": "cosine" if args.cosine else "constant",
        "batch": args.batch,
        "vae_steps": previous.get("vae_steps", args.vae_steps),
        "vae_batch": previous.get("vae_batch", args.vae_batch),
        "decoder_steps": args.decoder_steps + previous.get("decoder_steps", 0),
        "unet_steps": args.unet_steps + previous.get("unet_steps", 0),
        "caption_dropout": CAPTION_DROPOUT,
        "vae_seconds": previous.get("vae_seconds", 0) + round(vae_seconds),
        "seconds": round(time.time() - started) + previous.get("seconds", 0),
        "cpu_seconds": round(time.process_time() - cpu_started) + previous.get("cpu_seconds", 0),
    }
    for path in write_presets(out, preset_data(out, training)):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
