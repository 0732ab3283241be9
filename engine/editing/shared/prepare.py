"""The first stage of an edit: from source image and mask to the model-size tensors the diffusion runs on.

source + soft mask (any size)
  -> square context region around the mask (bridge.geometry.context_box), resized to the model size,
     mask binarised for the diffusion as the reference does (imaging.binary_model_mask)
  -> the respaced diffusion, and LPIPS when the background losses need it (both fail fast on bad settings)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np
from PIL import Image

from engine.editing.shared import imaging
from engine.editing.shared.params import EditParams
from engine.errors import InputError


@dataclass
class PreparedEdit:
    """What every later stage reads: the converted source, its soft mask, the context box and, at the
    model's size, the background, the binary mask and where the diffusion starts."""

    source: imaging.Prepared
    soft_mask: np.ndarray  # uint8 (H, W) over the whole image, inverted already when asked
    box: imaging.Box  # x, y, width, height of the context region
    size: int  # the model's side
    background: Any  # [1, 3, size, size] in [-1, 1]: the context region at the model's size
    model_mask: Any  # [1, 1, size, size] binary, 1 = edit
    init: Any  # where the diffusion starts: the background, or the scribble inside the mask
    diffusion: Any
    lpips_model: Any
    notes: List[str]


def to_model_tensor(image: Image.Image, size: int, device):
    import torch

    array = imaging.to_float_array(imaging.resize_image(image, (size, size)))
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def to_pil(tensor) -> Image.Image:
    return imaging.from_float_array(tensor.detach().float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy())


def diffusion_for(models, params: EditParams):
    """The respaced diffusion of these parameters, with clear errors for a bad schedule or strength."""
    try:
        diffusion = models.diffusion(params.timestep_respacing)
    except ValueError as exc:
        raise InputError(f"timestep_respacing {params.timestep_respacing!r}: {exc}") from None
    if not 0 <= params.skip_timesteps < diffusion.num_timesteps:
        raise InputError(
            f"skip_timesteps must be between 0 and {diffusion.num_timesteps - 1} for timestep_respacing "
            f"{params.timestep_respacing!r}, got {params.skip_timesteps}"
        )
    return diffusion


def lpips_for(models, params: EditParams, guided: bool, notes: List[str]):
    """The LPIPS model when the background losses need it, else None (loaded first: fails fast)."""
    background_loss = bool(params.background_preservation_loss or params.local_clip_guided_diffusion)
    if not (guided and float(params.lpips_sim_lambda) and background_loss):
        return None
    from engine.models.clip import get_lpips

    pretrained = not models.random_lpips
    lpips_model = get_lpips(
        "vgg",
        models.device,
        pretrained_backbone=pretrained,
        backbone_spec=getattr(models, "lpips_spec", None),
        weights_dir=getattr(models, "weights_dir", None),
    )
    if not pretrained:
        notes.append("LPIPS with a random backbone (test preset)")
    return lpips_model


def prepare_edit(
    image: Image.Image,
    mask: Image.Image,
    models,
    params: EditParams,
    init_image: Optional[Image.Image],
    guided: Optional[bool] = None,
) -> PreparedEdit:
    """Check and convert the inputs (InputError for bad ones), choose the context box, load LPIPS if the
    losses need it (before any model work: a missing file fails fast) and make the model-size tensors.
    ``guided``: some prompt guides the job (default: the job's prompt is not empty; regions have theirs)."""
    import torch

    source = imaging.prepare_source(image, "image")
    notes = list(source.notes)
    soft_mask = imaging.mask_array(mask, source.size)
    if params.invert_mask:
        soft_mask = 255 - soft_mask
    size = int(models.image_size)
    box = imaging.choose_box(soft_mask, size)
    x, y, w, h = box
    notes.append(f"edited the {w}x{h} region at ({x}, {y}) at the model's {size}x{size}")
    if w != h:
        notes.append("the image is narrower than the context square: the region was stretched to a square")

    scribble = None
    if init_image is not None:
        scribble_prepared = imaging.prepare_source(init_image, "init image")
        if scribble_prepared.size != source.size:
            raise InputError(
                f"init image size {scribble_prepared.size[0]}x{scribble_prepared.size[1]} differs from the "
                f"image size {source.size[0]}x{source.size[1]}"
            )
        notes.extend(scribble_prepared.notes)
        scribble = imaging.crop(scribble_prepared.rgb, box)

    diffusion = lpips_model = None
    if models.method == "paper":  # the latent loop has its own schedule, no LPIPS
        diffusion = diffusion_for(models, params)
        guided = bool(params.prompt.strip()) if guided is None else guided
        lpips_model = lpips_for(models, params, guided, notes)

    device = models.device
    background = to_model_tensor(imaging.crop(source.rgb, box), size, device)
    crop_mask = imaging.crop_array(soft_mask, box)
    model_mask = torch.from_numpy(imaging.binary_model_mask(crop_mask, size))[None, None].to(device)
    init = background
    if scribble is not None:
        init = to_model_tensor(scribble, size, device) * model_mask + background * (1 - model_mask)
    return PreparedEdit(
        source=source,
        soft_mask=soft_mask,
        box=box,
        size=size,
        background=background,
        model_mask=model_mask,
        init=init,
        diffusion=diffusion,
        lpips_model=lpips_model,
        notes=notes,
    )
