"""The latent method's models: a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)
loaded with each library's own ``from_pretrained`` from the verified local files, never from the network.

``load_latent_models(preset, weights_dir, device) -> LatentModels``; ``engine.models.loading.load_models``
calls it for a preset whose ``method`` is ``latent``. The editing loop is engine/editing/latent.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from engine.errors import EngineError, WeightsCorruptError
from engine.models import weights
from engine.models.registry import ModelSpec, Preset, pipeline_root, resolve_weights_dir

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class LatentModels:
    """What the latent loop needs; ``method`` tells ``edit()`` which loop runs."""

    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler_config: Dict[str, Any]  # a fresh DDIMScheduler per job (set_timesteps changes it)
    clip: Any  # engine.models.clip.ClipModel ranking the candidates, or None
    device: torch.device
    preset: str
    image_size: int  # the side the model runs at (the preset's resolution)
    guidance_scale: float  # the preset's classifier-free guidance
    dtype: torch.dtype  # the weights' dtype on this device
    family: str = "sd"
    files: Dict[str, Path] = field(default_factory=dict)
    weights_dir: Optional[Path] = None
    method: str = "latent"
    class_cond: bool = False
    model_flags: Dict[str, Any] = field(default_factory=dict)  # none: admission counts no activations
    compiled_unet: Optional[Any] = field(default=None, repr=False, compare=False)

    def scheduler(self):
        """DDIM with the model's betas; clip_sample off as the authors' scripts set it for latents."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config({**self.scheduler_config, "clip_sample": False})

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        """The text encoder's last hidden states [len(prompts), tokens, dim] (SD 1.x / 2.x conditioning)."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids).last_hidden_state.to(self.dtype)


def weights_dtype(preset_dtype: str, device: torch.device) -> torch.dtype:
    """fp32 on a CPU (half kernels are slow there); on a GPU the preset's dtype, "auto" = fp16, or bf16
    where the GPU has it (compute capability 8 and above): SD's VAE overflows less in bf16."""
    if device.type == "cpu" or preset_dtype == "fp32":
        return torch.float32
    if preset_dtype == "bf16":
        return torch.bfloat16
    if preset_dtype == "auto" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float16


def _verified(spec: ModelSpec, weights_dir: Path, preset_name: str) -> Path:
    """The file's path, verified; a file placed by hand (no published digest) has it recorded first."""
    path = spec.path(weights_dir)
    if spec.trust_on_first_use and path.is_file() and weights.read_recorded_sha256(path) is None:
        weights.record_sha256(path, weights.sha256_file(path))
    return weights.verify(spec, weights_dir, preset_name)


def _variant(files: List[ModelSpec], part: str) -> Optional[str]:
    """diffusers' weight variant of a part ("fp16" for diffusion_pytorch_model.fp16.safetensors)."""
    for spec in files:
        name = spec.file.rsplit("/", 1)[-1]
        if f"/{part}/" in f"/{spec.file}" and name.endswith(".safetensors") and name.count(".") == 2:
            return name.split(".")[1]
    return None


def load_latent_models(
    preset: Preset, weights_dir: Union[str, os.PathLike, None], device: torch.device
) -> LatentModels:
    """Verified, frozen latent models of a ``method: latent`` preset on ``device``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the engine reports its own progress; no bar on stderr

    from engine.models.clip import ClipModel, read_clip_state_dict

    pipeline = preset.pipeline
    assert pipeline is not None
    if pipeline.family != "sd":
        raise EngineError(
            f"preset {preset.name!r}: the {pipeline.family} family (two text encoders and size conditioning) "
            "is described but its loop is not built yet; the latent loop runs SD 1.x / 2.x folders"
        )
    folder = resolve_weights_dir(weights_dir)
    files = {spec.file: _verified(spec, folder, preset.name) for spec in pipeline.files}
    root = pipeline_root(preset, folder)
    dtype = weights_dtype(pipeline.dtype, device)
    common: Dict[str, Any] = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(
            root, subfolder="unet", torch_dtype=dtype, variant=_variant(pipeline.files, "unet"), **common
        )
        vae = AutoencoderKL.from_pretrained(
            root, subfolder="vae", torch_dtype=dtype, variant=_variant(pipeline.files, "vae"), **common
        )
        text_encoder = CLIPTextModel.from_pretrained(
            root / "text_encoder", dtype=dtype, variant=_variant(pipeline.files, "text_encoder"), **common
        )
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", **common)
        scheduler_config = dict(DDIMScheduler.load_config(root, subfolder="scheduler", **common))
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsCorruptError(f"The diffusers folder {root} could not be loaded: {exc}") from exc
    clip = None
    if preset.clip is not None:
        clip_path = weights.verify(preset.clip, folder, preset.name)
        files["clip"] = clip_path
        clip = ClipModel.from_state_dict(preset.clip.config, read_clip_state_dict(clip_path), device)
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return LatentModels(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        clip=clip,
        device=device,
        preset=preset.name,
        image_size=pipeline.resolution,
        guidance_scale=pipeline.guidance_scale,
        dtype=dtype,
        family=pipeline.family,
        files=files,
        weights_dir=folder,
    )
