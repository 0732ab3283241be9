"""``load_models(preset, weights_dir, device) -> Models``: verified weights into ready, frozen models.

Every preset goes through the same path: verify the file's SHA-256, read the state_dict, build the
architecture on the meta device and assign the tensors with ``strict=True``. Generated presets
(``tiny``) first write their seeded random weights (and the digest beside them) when missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch

from engine.errors import WeightsCorruptError
from engine.models import weights
from engine.models.clip import ClipModel, build_open_clip, read_clip_state_dict
from engine.models.devices import pick_device
from engine.models.diffusion import GaussianDiffusion, diffusion_from_flags
from engine.models.registry import ModelSpec, Preset, get_preset, resolve_weights_dir
from engine.models.unet import UNetModel, unet_from_flags

RANDOM_LPIPS_PRESETS = ("tiny", "toy")  # test presets: Algorithm 1's LPIPS gets a random backbone


@dataclass
class Models:
    unet: UNetModel
    diffusion_flags: dict
    model_flags: dict
    clip: ClipModel
    device: torch.device
    preset: str
    image_size: int
    class_cond: bool
    files: dict = field(default_factory=dict)  # kind -> Path of the weights used
    # where get_lpips finds the VGG16 backbone (Algorithm 1); None spec: the built-in lpips_vgg16
    lpips_spec: Optional[ModelSpec] = None
    weights_dir: Optional[Path] = None
    # the torch.compile'd UNet (or why compiling failed), made by the first edit asking for it; kept here
    # so it lives exactly as long as these models
    compiled_unet: Optional[Any] = field(default=None, repr=False, compare=False)
    # LPIPS on a random backbone: the test presets' (no pretrained VGG16 file for a toy)
    random_lpips: bool = False

    @property
    def method(self) -> Literal["paper"]:
        """The editing loop these models run: the paper's (engine/editing/paper)."""
        return "paper"

    def diffusion(self, timestep_respacing: str = "") -> GaussianDiffusion:
        """The schedule respaced as asked ("100", "ddim50", "10,20,30"; "" keeps every step)."""
        return diffusion_from_flags({**self.diffusion_flags, "timestep_respacing": timestep_respacing})


def _is_true(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "t")


def _save_atomic(state_dict: dict, path: Path) -> str:
    """Write a state_dict via a temporary name, record its SHA-256 beside it, return the digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state_dict, tmp)
    digest = weights.sha256_file(tmp)
    os.replace(tmp, path)
    weights.record_sha256(path, digest)
    return digest


def generate_weights(spec: ModelSpec, path: Path) -> str:
    """Seeded random weights at the spec's architecture (the reference's inits, fully random otherwise)."""
    seed = int((spec.generate or {}).get("seed", 0))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        if spec.kind == "diffusion":
            model = unet_from_flags(spec.model_flags)
            # zero-initialised output convs would make every output 0; small random values exercise more
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.ndim > 1 and not p.any():
                        p.normal_(0.0, 0.02)
                    elif name.endswith("bias") and not p.any():
                        p.normal_(0.0, 0.01)
        else:
            model = build_open_clip(spec.config)
        state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    finally:
        torch.random.set_rng_state(generator_state)
    return _save_atomic(state_dict, path)


def ensure_file(spec: ModelSpec, weights_dir: Union[str, os.PathLike, None], preset_name: str) -> Path:
    """The verified path of a model's weights; generated models are made first when missing."""
    path = spec.path(weights_dir)
    if spec.generated and (not path.is_file() or weights.read_recorded_sha256(path) is None):
        generate_weights(spec, path)
    return weights.verify(spec, weights_dir, preset_name)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict file, memory-mapped when possible (no second copy of a 2 GB checkpoint)."""
    try:
        try:
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a damaged file
        raise WeightsCorruptError(f"Could not read the weights {path}: {exc}") from exc
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise WeightsCorruptError(f"{path} does not hold a state_dict")
    return state_dict


def load_unet(spec: ModelSpec, path: Path, device: torch.device) -> UNetModel:
    state_dict = read_state_dict(path)
    with torch.device("meta"):
        unet = unet_from_flags(spec.model_flags)
    try:
        unet.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsCorruptError(
            f"{path} does not match the architecture its model data file describes: {exc}"
        ) from exc
    # fp32 weights on every device: each edit converts the inner blocks once to the precision it asks for
    # (``precision``: fp32 really is fp32; auto is bf16 / fp16 on CUDA, as the reference's use_fp16)
    return unet.float().to(device).eval().requires_grad_(False)


def load_models(
    preset: Union[str, Preset] = "default",
    weights_dir: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device, None] = None,
) -> Models:
    """Verified, frozen (eval, requires_grad False) models of a preset on the chosen device (a latent
    preset's are engine.models.latent.LatentModels)."""
    spec_preset = preset if isinstance(preset, Preset) else get_preset(preset)
    target = device if isinstance(device, torch.device) else pick_device(device)
    if spec_preset.method == "latent":
        from engine.models.latent import load_latent_models

        return load_latent_models(spec_preset, weights_dir, target)  # type: ignore[return-value]
    assert spec_preset.diffusion is not None and spec_preset.clip is not None
    folder = resolve_weights_dir(weights_dir)
    unet_path = ensure_file(spec_preset.diffusion, folder, spec_preset.name)
    clip_path = ensure_file(spec_preset.clip, folder, spec_preset.name)
    unet = load_unet(spec_preset.diffusion, unet_path, target)
    clip = ClipModel.from_state_dict(spec_preset.clip.config, read_clip_state_dict(clip_path), target)
    flags = dict(spec_preset.diffusion.model_flags)
    return Models(
        unet=unet,
        diffusion_flags=dict(spec_preset.diffusion.diffusion_flags),
        model_flags=flags,
        clip=clip,
        device=target,
        preset=spec_preset.name,
        image_size=int(flags["image_size"]),
        class_cond=_is_true(flags.get("class_cond", False)),
        files={"diffusion": unet_path, "clip": clip_path},
        lpips_spec=spec_preset.lpips,
        weights_dir=folder,
        random_lpips=spec_preset.name in RANDOM_LPIPS_PRESETS,
    )
