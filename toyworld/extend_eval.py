"""Text-guided extrapolation in the toy world: does the new area follow its side's prompt, is the seam soft?

For each seeded scene (``scenes.random_scene``, 32 px) and a target "a {colour} {shape}", run
``engine.editing.extend.extend`` to the right by ``--fraction`` of the width twice with the same seeds: once
with the prompt, once with an empty prompt. Each candidate's new area is judged by the fixed pixel rule
``scenes.classify_colour`` (never by CLIP). The seam is measured on every candidate: the mean absolute
horizontal difference across the old border (column W-1 to W) against the mean horizontal difference
inside the old image and inside the new area (RGB, 0..255). The original pixels are checked byte for byte.

    python -m toyworld.extend_eval --scenes 30 --json docs/results/extend/extend-toy.json \\
        --picture docs/images/extend_toy.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from toyworld.evaluate import DEFAULT_MODELS, preset_edit_defaults
from toyworld.scenes import COLOURS, SHAPES, classify_colour, random_scene


@dataclass
class Condition:
    candidates: int = 0
    hits: int = 0
    top_hits: int = 0
    scenes: int = 0
    original_exact: bool = True
    seam: list = field(default_factory=list)  # per candidate: mean |dx| across the old border
    inside_old: list = field(default_factory=list)
    inside_new: list = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.candidates if self.candidates else 0.0

    def seam_summary(self) -> dict:
        seam, old, new = (
            float(np.mean(v)) if v else 0.0 for v in (self.seam, self.inside_old, self.inside_new)
        )
        return {
            "seam": seam,
            "inside_old": old,
            "inside_new": new,
            "seam_over_old": seam / old if old else None,
            "seam_over_new": seam / new if new else None,
        }


def gradients(image: np.ndarray, border: int) -> tuple:
    """(across the border, inside the old image, inside the new area): mean |horizontal difference|."""
    pixels = image.astype(np.float32)
    dx = np.abs(pixels[:, 1:] - pixels[:, :-1]).mean(axis=2)  # dx[:, x] is between columns x and x + 1
    return float(dx[:, border - 1].mean()), float(dx[:, : border - 1].mean()), float(dx[:, border:].mean())


def run_condition(image, target: str, prompt: str, spec, models, params, result: Condition) -> list:
    from engine.editing.extend import extend

    outcome = extend(image, spec, models, dataclasses.replace(params, prompt=prompt))
    width = image.width
    source = np.asarray(image.convert("RGB"))
    colours = []
    for candidate in outcome.candidates:
        pixels = np.asarray(candidate.image.convert("RGB"))
        colours.append(classify_colour(pixels[:, width:]))
        result.original_exact &= bool(np.array_equal(pixels[:, :width], source))
        seam, old, new = gradients(pixels, width)
        result.seam.append(seam)
        result.inside_old.append(old)
        result.inside_new.append(new)
    result.candidates += len(colours)
    result.hits += sum(colour == target for colour in colours)
    result.top_hits += colours[0] == target
    result.scenes += 1
    return colours


def picture(models, params, path: str, seed: int = 7) -> None:
    """A scene extended left with one prompt and right with another, 6x, the original outlined."""
    from engine.editing.extend import ExtendSpec, extend

    rng = random.Random(f"toyworld-extend-picture-{seed}")
    scene = random_scene(rng, int(models.image_size), max_shapes=1).image
    spec = ExtendSpec(left=48, right=48, side_prompts={"left": "a green square", "right": "a red circle"})
    chosen = dataclasses.replace(params, prompt="", seed=1000 + seed)
    outcome = extend(scene, spec, models, chosen)
    scale = 6
    rows = []
    for candidate in outcome.candidates[:3]:
        big = candidate.image.convert("RGB").resize(
            (candidate.image.width * scale, candidate.image.height * scale), Image.Resampling.NEAREST
        )
        draw = ImageDraw.Draw(big)
        x0 = spec.left * scale
        draw.rectangle(
            [x0, 0, x0 + scene.width * scale - 1, big.height - 1], outline=(255, 255, 255), width=2
        )
        rows.append(big)
    gap = 8
    sheet = Image.new(
        "RGB", (rows[0].width, sum(r.height for r in rows) + gap * (len(rows) - 1)), (40, 40, 40)
    )
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + gap
    sheet.save(path)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toyworld.extend_eval", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default=DEFAULT_MODELS, help="preset name or folder with preset.json")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--fraction", type=float, default=0.5, help="extension as a fraction of the width")
    parser.add_argument("--json", help="write the full result here")
    parser.add_argument("--picture", help="write a two-prompt extrapolation picture here")
    parser.add_argument("--blend_band", type=int, default=0, help="transition band into the original (px)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--guidance_grad", choices=("unet", "x0"), default="unet", help="guidance gradient (issue 23)"
    )
    args = parser.parse_args(argv)

    import torch

    from engine.editing.extend import ExtendSpec
    from engine.editing.shared.params import EditParams
    from engine.models.loading import load_models

    torch.set_num_threads(args.threads)
    params = EditParams(**preset_edit_defaults(args.models), guidance_grad=args.guidance_grad)
    models = load_models(args.models, device="cpu")
    size = int(models.image_size)
    amount = max(1, round(size * args.fraction))
    spec = ExtendSpec(right=amount, blend_band=args.blend_band)
    guided, unguided = Condition(), Condition()
    start = time.time()
    for index in range(args.scenes):
        rng = random.Random(f"toyworld-extend-{index}")
        scene = random_scene(rng, size, max_shapes=2)
        colour, kind = rng.choice(COLOURS), rng.choice(SHAPES)
        seeded = dataclasses.replace(params, seed=20_000 + 100 * index)
        got = run_condition(scene.image, colour, f"a {colour} {kind}", spec, models, seeded, guided)
        plain = run_condition(scene.image, colour, "", spec, models, seeded, unguided)
        print(f"scene {index}: 'a {colour} {kind}' guided {got} unguided {plain}", flush=True)
    seconds = time.time() - start
    report = {
        "scenes": args.scenes,
        "extension": f"{amount} px to the right of {size}x{size} ({args.fraction:.0%})",
        "blend_band": args.blend_band,
        "params": params.to_dict(),
        "seconds": seconds,
    }
    for name, condition in (("guided", guided), ("unguided", unguided)):
        report[name] = {
            **{k: v for k, v in asdict(condition).items() if k not in ("seam", "inside_old", "inside_new")},
            "hit_rate": condition.hit_rate,
            **condition.seam_summary(),
        }
        s = condition.seam_summary()
        print(
            f"{name:8s} hit rate {condition.hit_rate:6.1%} ({condition.hits}/{condition.candidates}), "
            f"top-ranked {condition.top_hits}/{condition.scenes}, original exact {condition.original_exact}; "
            f"seam |dx| {s['seam']:.1f} vs inside old {s['inside_old']:.1f}, inside new {s['inside_new']:.1f}"
        )
    print(f"{seconds:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.picture:
        picture(models, params, args.picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
