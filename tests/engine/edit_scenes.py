"""A quick edit setting and a small random scene, shared by the device and precision tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
