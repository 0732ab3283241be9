"""Zero-shot accuracy of a toy CLIP on clean held-out single shapes: does its text carry colour AND shape?

Each image is one shape (colours and shapes in equal numbers) from its own seed stream, never used in
training, shown either the way the guidance sees it (a square region around the shape, mid-grey outside)
or as the whole single-shape scene. CLIP picks the nearest of the 18 prompts "a {colour} {shape}"; the
colour and the shape of its pick are scored separately.
"""

from __future__ import annotations

import random

import numpy as np

from toyworld.data import MASK_GREY, _mask_around
from toyworld.scenes import COLOURS, SHAPES, single_shape_scene

PROMPTS: tuple[str, ...] = tuple(f"a {c} {s}" for c in COLOURS for s in SHAPES)


def held_out_shapes(count: int, seed: int = 0, masked: bool = True, size: int = 32):
    """uint8 [N, H, W, 3] single shapes, and their (colour, shape) labels, balanced over the 18 pairs."""
    rng = random.Random(f"toyworld-zeroshot-{seed}-{'masked' if masked else 'scene'}")
    images, labels = [], []
    for index in range(count):
        colour, kind = COLOURS[index % len(COLOURS)], SHAPES[(index // len(COLOURS)) % len(SHAPES)]
        scene = single_shape_scene(rng, size, colour=colour, kind=kind)
        pixels = np.asarray(scene.image).copy()
        if masked:
            pixels[~_mask_around(scene.shapes[0], size, rng)] = round(MASK_GREY * 255)
        images.append(pixels)
        labels.append((colour, kind))
    return np.stack(images), labels


def zero_shot(clip, count: int = 360, seed: int = 0, masked: bool = True) -> dict:
    """Colour, shape and both accuracy (overall, per colour, per shape) of ``clip`` (engine ClipModel)."""
    import torch

    images, labels = held_out_shapes(count, seed, masked, int(clip.image_size))
    with torch.no_grad():
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        similarity = clip.encode_image(batch) @ clip.encode_text(list(PROMPTS)).T
    picks = [PROMPTS[i].split()[1:] for i in similarity.argmax(dim=1).tolist()]
    colour_ok = np.array([p[0] == c for p, (c, _) in zip(picks, labels)])
    shape_ok = np.array([p[1] == k for p, (_, k) in zip(picks, labels)])
    colours = np.array([c for c, _ in labels])
    kinds = np.array([k for _, k in labels])
    return {
        "images": count,
        "view": "masked" if masked else "scene",
        "colour": float(colour_ok.mean()),
        "shape": float(shape_ok.mean()),
        "both": float((colour_ok & shape_ok).mean()),
        "colour_per_colour": {c: float(colour_ok[colours == c].mean()) for c in COLOURS},
        "shape_per_shape": {k: float(shape_ok[kinds == k].mean()) for k in SHAPES},
    }


def describe(result: dict) -> str:
    per_shape = ", ".join(f"{k} {v:.0%}" for k, v in result["shape_per_shape"].items())
    per_colour = ", ".join(f"{c} {v:.0%}" for c, v in result["colour_per_colour"].items())
    return (
        f"zero-shot on {result['images']} held-out {result['view']} shapes: colour {result['colour']:.1%}, "
        f"shape {result['shape']:.1%}, both {result['both']:.1%} (shape: {per_shape}; colour: {per_colour})"
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m toyworld.clip_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default="toy", help="preset name or folder with preset.json")
    parser.add_argument("--count", type=int, default=360)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    from engine.models.loading import load_models

    models = load_models(args.models, device="cpu")
    for masked in (True, False):
        print(describe(zero_shot(models.clip, args.count, masked=masked)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
