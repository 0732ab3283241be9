"""A quick edit setting and small random scenes, shared by the engine tests (devices, precision, the
paper loop's two guidance variants, the latent presets)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from engine.editing.shared.params import EditParams

FAST = dict(timestep_respacing="10", skip_timesteps=6, aug_num=3, batch_size=2, iterations_num=1)


def quick_params(**overrides) -> EditParams:
    return EditParams(**{"prompt": "a red ball", **FAST, **overrides})


def random_scene(size: int = 36, seed: int = 5):
    """A noise image with a centred square mask."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return image, Image.fromarray(mask)


def shape_scene():
    """A grey 40x40 image with a blue square top left and a 20x20 selection beside it (a latent preset's
    32 px box around it)."""
    image = Image.new("RGB", (40, 40), (200, 200, 200))
    ImageDraw.Draw(image).rectangle((2, 2, 14, 14), fill=(30, 60, 220))
    mask = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(mask).rectangle((16, 12, 35, 31), fill=255)
    return image, mask


def tensor_scene(models, seed: int, rows: slice, cols: slice, prompt: str):
    """(init [1, 3, s, s] in [-1, 1], a box mask [1, 1, s, s] over ``rows`` x ``cols``, the prompt's
    embedding) at the models' size: Algorithm 2's inputs as blended_diffusion takes them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    size = models.image_size
    init = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., rows, cols] = 1
    return init, mask, models.clip.encode_text([prompt])


def guidance_settings(**overrides):
    """The job's GuidanceSettings of EditParams with ``overrides`` (the defaults are EditParams')."""
    from engine.editing.paper.blended import GuidanceSettings

    return GuidanceSettings.from_params(EditParams(**overrides))
