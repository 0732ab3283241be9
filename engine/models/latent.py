"""The latent method's models: a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)
loaded with each library's own ``from_pretrained`` from the verified local files, never from the network.

``load_latent_models(preset, weights_dir, device) -> LatentModels``; ``engine.models.loading.load_models``
calls it for a preset whose ``method`` is ``latent``. The editing loop is
engine/editing/latent/blended_latent.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import torch

from engine.errors import WeightsCorruptError
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
    scheduler_config: Dict[str, Any]  # a fresh scheduler per job (set_timesteps changes it)
    clip: Any  # engine.models.clip.ClipModel ranking the candidates, or None
    device: torch.device
    preset: str
    image_size: int  # the side the model runs at (the preset's resolution)
    guidance_scale: float  # the preset's classifier-free guidance
    dtype: torch.dtype  # the weights' dtype on this device
    family: str = "sd"
    files: Dict[str, Path] = field(default_factory=dict)
    weights_dir: Optional[Path] = None
    class_cond: bool = False
    model_flags: Dict[str, Any] = field(default_factory=dict)  # none: admission counts no activations
    compiled_unet: Optional[Any] = field(default=None, repr=False, compare=False)

    text_encoder_2: Any = None  # SDXL: transformers CLIPTextModelWithProjection
    tokenizer_2: Any = None
    sampler: str = "ddim"  # the preset's scheduler (registry.PIPELINE_SCHEDULERS)
    min_steps: int = 0  # the steps a run keeps at any strength (registry.Pipeline.min_steps)

    @property
    def method(self) -> Literal["latent"]:
        """The editing loop these models run: Blended Latent Diffusion (engine/editing/latent)."""
        return "latent"

    def scheduler(self):
        """The preset's sampler with the model's betas: DDIM, clip_sample off as the authors' scripts set it
        for latents; or a latent consistency model's LCMScheduler (its own boundary conditions)."""
        from diffusers import DDIMScheduler, LCMScheduler

        if self.sampler == "lcm":
            return LCMScheduler.from_config({**self.scheduler_config, "clip_sample": False})
        return DDIMScheduler.from_config({**self.scheduler_config, "clip_sample": False})

    def _ids(self, tokenizer, prompt: str) -> torch.Tensor:
        return tokenizer(
            [prompt],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """The UNet's conditioning on ``prompt`` ("" is the unconditional one).

        SD 1.x / 2.x: the text encoder's last hidden states. SDXL: both encoders' penultimate hidden states
        side by side, the second one's pooled projection and the size conditioning (no crop, the model's
        resolution); its unconditional input is all zeros, as the SDXL base pipeline's configuration says.
        """
        if self.family != "sdxl":
            return Conditioning(
                self.text_encoder(self._ids(self.tokenizer, prompt)).last_hidden_state.to(self.dtype)
            )
        first = self.text_encoder(self._ids(self.tokenizer, prompt), output_hidden_states=True)
        second = self.text_encoder_2(self._ids(self.tokenizer_2, prompt), output_hidden_states=True)
        states = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        pooled = second.text_embeds
        if not prompt:
            states, pooled = torch.zeros_like(states), torch.zeros_like(pooled)
        side = float(self.image_size)
        time_ids = torch.tensor([[side, side, 0.0, 0.0, side, side]], device=self.device)
        added = {"text_embeds": pooled.to(self.dtype), "time_ids": time_ids.to(self.dtype)}
        return Conditioning(states.to(self.dtype), added)


@dataclass
class Conditioning:
    """What the UNet is conditioned on besides the latents and the timestep, for a batch of one."""

    states: torch.Tensor  # encoder_hidden_states [1, tokens, dim]
    added: Optional[Dict[str, torch.Tensor]] = None  # SDXL's added_cond_kwargs (text_embeds, time_ids)


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
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the engine reports its own progress; no bar on stderr

    from engine.models.clip import ClipModel, read_clip_state_dict

    pipeline = preset.pipeline
    assert pipeline is not None
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
        text_encoder_2 = tokenizer_2 = None
        if pipeline.family == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                root / "text_encoder_2",
                dtype=dtype,
                variant=_variant(pipeline.files, "text_encoder_2"),
                **common,
            )
            tokenizer_2 = CLIPTokenizer.from_pretrained(root / "tokenizer_2", **common)
        scheduler_config = dict(DDIMScheduler.load_config(root, subfolder="scheduler", **common))
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsCorruptError(f"The diffusers folder {root} could not be loaded: {exc}") from exc
    clip = None
    if preset.clip is not None:
        clip_path = weights.verify(preset.clip, folder, preset.name)
        files["clip"] = clip_path
        clip = ClipModel.from_state_dict(preset.clip.config, read_clip_state_dict(clip_path), device)
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    if dtype != torch.float32 and getattr(vae.config, "force_upcast", False):
        vae.to(torch.float32)  # SD XL's VAE overflows in fp16: it runs in fp32, as its config asks
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
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        sampler=pipeline.scheduler,
        min_steps=pipeline.min_steps,
    )
