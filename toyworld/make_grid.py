"""The toy example scene and the grid picture of toy edits.

    python -m toyworld.make_grid  # writes resources/examples/toy_scene*.{png,txt}, docs/images/toy_grid.png

The grid has one row per prompt (each shape in two colours): source, mask, then the four candidates in rank
order, all made by ``engine.editing.editor.edit`` with the toy preset's recommended settings.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from toyworld.scenes import ShapeSpec, render

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "resources" / "examples"
GRID_PATH = REPO_ROOT / "docs" / "images" / "toy_grid.png"
# Every shape twice and every colour once, so the grid shows whether shape as well as colour follows the text.
PROMPTS = (
    "a red circle",
    "a cyan circle",
    "a blue square",
    "a magenta square",
    "a yellow triangle",
    "a green triangle",
)
EXAMPLE_SIZE = 128
EXAMPLE_HOLE = (64, 36, 120, 92)  # x0, y0, x1, y1: the empty region the example edits
CELL = 128
LABEL_HEIGHT = 16


def example_scene() -> tuple[Image.Image, Image.Image]:
    """A fixed 128 px scene (two shapes on a grey background) and the mask of its empty right part."""
    background = np.broadcast_to(np.array((128, 128, 128), np.float32), (EXAMPLE_SIZE,) * 2 + (3,)).copy()
    shapes = [
        ShapeSpec("green", "circle", (10, 12, 52, 54)),
        ShapeSpec("magenta", "square", (16, 74, 50, 108)),
    ]
    scene = render(EXAMPLE_SIZE, shapes, random.Random("toy-example"), background=(background, "grey"))
    mask = np.zeros((EXAMPLE_SIZE, EXAMPLE_SIZE), np.uint8)
    x0, y0, x1, y1 = EXAMPLE_HOLE
    mask[y0:y1, x0:x1] = 255
    return scene.image, Image.fromarray(mask, "L")


def write_example(folder: Path = EXAMPLES, prompt: str = PROMPTS[0]) -> tuple[Path, Path]:
    """toy_scene.png, toy_scene_mask.png and toy_scene.txt (its prompt), the names install.py looks for."""
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = example_scene()
    image_path, mask_path = folder / "toy_scene.png", folder / "toy_scene_mask.png"
    image.save(image_path)
    mask.save(mask_path)
    (folder / "toy_scene.txt").write_text(prompt + "\n", encoding="utf-8")
    return image_path, mask_path


def _label(cell: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (CELL, CELL + LABEL_HEIGHT), (255, 255, 255))
    out.paste(cell.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST), (0, LABEL_HEIGHT))
    ImageDraw.Draw(out).text((3, 2), text, fill=(0, 0, 0))
    return out


def make_grid(models, params: dict, prompts: tuple = PROMPTS, seed: int = 7) -> Image.Image:
    from engine.editing.editor import EditParams, edit

    image, mask = example_scene()
    rows = []
    for prompt in prompts:
        result = edit(image, mask, models, EditParams(**{**params, "prompt": prompt, "seed": seed}))
        cells = [_label(image, "source"), _label(mask, f"mask: {prompt}")]
        cells += [_label(c.image, f"#{c.rank} seed {c.seed}") for c in result.candidates[:4]]
        rows.append(cells)
    width = max(len(r) for r in rows) * CELL
    grid = Image.new("RGB", (width, len(rows) * (CELL + LABEL_HEIGHT)), (255, 255, 255))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            grid.paste(cell, (c * CELL, r * (CELL + LABEL_HEIGHT)))
    return grid


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.make_grid", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO_ROOT / "resources" / "models" / "toy"))
    parser.add_argument("--out", default=str(GRID_PATH))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from engine.models.loading import load_models
    from toyworld.evaluate import preset_edit_defaults

    torch.set_num_threads(args.threads)
    write_example()
    models = load_models(args.models, device="cpu")
    params = {**preset_edit_defaults(args.models), "batch_size": 4, "iterations_num": 1}
    grid = make_grid(models, params)
    out = Path(args.out)
    grid.save(out)
    print(f"wrote {out} and {EXAMPLES / 'toy_scene.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
