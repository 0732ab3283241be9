"""Issue 39's measure: two regions with two prompts, edited in one regions job against two sequential
single-selection edits (the first's top-ranked candidate edited again), on held-out scenes, side by side.

Each scene is a seeded background with two square regions, one in each half, and a prompt for each
("a red circle" left, "a blue square" right: two different colours, shapes at random); a third box is a
region the user hid, so it is not sent, and must come back byte for byte. Every candidate is judged per
region by the pixel rule (toyworld.scenes.region_colour, toyworld.judge.region_shape): its own colour,
its own colour and shape, both regions at once, and leaks (one region showing the other's colour).
``--chained`` adds the two edits without the user's choice in between (candidate i of the first edit
edited once more with its own seed), which tells the ranking's share of the sequential edits' lead from the
method's.
CPU seconds are the process time of the edit() calls alone.

    OMP_NUM_THREADS=1 python -m toyworld.regions_eval --models toy-latent --scenes 120 --first-seed 30 \\
        --json docs/results/regions/regions-toy-latent.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from engine.diagnostics import cpu_name
from toyworld.evaluate import preset_edit_defaults
from toyworld.judge import region_shape
from toyworld.scenes import COLOURS, SHAPES, box_mask, region_colour, render

Box = tuple[int, int, int, int]
HIDDEN_SIDE = 6


@dataclass
class RegionsCase:
    seed: int
    image: Image.Image
    boxes: tuple[Box, Box]
    targets: tuple[tuple[str, str], tuple[str, str]]  # (colour, shape) of each region
    hidden: Optional[Box]  # the hidden region's box: not sent, unchanged

    def prompt(self, k: int) -> str:
        return "a {} {}".format(*self.targets[k])


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def regions_case(seed: int, size: int = 32) -> RegionsCase:
    """A seeded background, one square region in each half (12 to 15 px at 32), two colours, a hidden box."""
    rng = random.Random(f"toyworld-regions-{seed}")
    half = size // 2
    boxes = []
    for left in (0, half):
        side = rng.randint(round(size * 0.375), round(size * 0.47))
        x, y = left + rng.randint(0, half - side), rng.randint(0, size - side)
        boxes.append((x, y, x + side, y + side))
    colours = rng.sample(COLOURS, 2)
    targets = ((colours[0], rng.choice(SHAPES)), (colours[1], rng.choice(SHAPES)))
    hidden = None
    for _ in range(50):
        x, y = rng.randint(0, size - HIDDEN_SIDE), rng.randint(0, size - HIDDEN_SIDE)
        box = (x, y, x + HIDDEN_SIDE, y + HIDDEN_SIDE)
        if not any(_overlaps(box, b) for b in boxes):
            hidden = box
            break
    scene = render(size, [], rng)
    return RegionsCase(seed, scene.image, (boxes[0], boxes[1]), targets, hidden)


@dataclass
class Tally:
    """Counts over a condition's candidates."""

    candidates: int = 0
    colour: tuple[int, int] = (0, 0)  # each region's own colour
    both_colour: int = 0
    both_shape: int = 0  # both regions their own colour and shape
    leaks: int = 0
    top: int = 0  # scenes whose top-ranked candidate has both regions right (colour and shape)
    scenes: int = 0
    cpu_seconds: float = 0.0
    background_exact: bool = True
    hidden_exact: bool = True

    def add(self, case: RegionsCase, images: list[Image.Image]) -> None:
        union = np.maximum(*(np.asarray(box_mask(case.image.width, b)) for b in case.boxes))
        for rank, image in enumerate(images):
            judged = []
            for box in case.boxes:
                got = region_colour(image, box)
                judged.append((got, region_shape(image, box, got) if got else None))
            hits = [g[0] == t[0] for g, t in zip(judged, case.targets)]
            shapes = [g == t for g, t in zip(judged, case.targets)]
            self.candidates += 1
            self.colour = (self.colour[0] + hits[0], self.colour[1] + hits[1])
            self.both_colour += all(hits)
            self.both_shape += all(shapes)
            self.leaks += judged[0][0] == case.targets[1][0] or judged[1][0] == case.targets[0][0]
            self.top += rank == 0 and all(shapes)
            source, result = np.asarray(case.image), np.asarray(image.convert("RGB"))
            self.background_exact &= bool(np.array_equal(source[union == 0], result[union == 0]))
            if case.hidden is not None:
                x0, y0, x1, y1 = case.hidden
                self.hidden_exact &= bool(np.array_equal(source[y0:y1, x0:x1], result[y0:y1, x0:x1]))
        self.scenes += 1

    def to_dict(self) -> dict:
        n = max(1, self.candidates)
        return {
            "candidates": self.candidates,
            "scenes": self.scenes,
            "region_1_colour": round(100 * self.colour[0] / n, 1),
            "region_2_colour": round(100 * self.colour[1] / n, 1),
            "both_colour": round(100 * self.both_colour / n, 1),
            "both_colour_shape": round(100 * self.both_shape / n, 1),
            "leaks": round(100 * self.leaks / n, 1),
            "top_both_colour_shape": round(100 * self.top / max(1, self.scenes), 1),
            "cpu_seconds_per_scene": round(self.cpu_seconds / max(1, self.scenes), 3),
            "background_exact": self.background_exact,
            "hidden_exact": self.hidden_exact,
        }


def run_model(models_dir: str, scenes: int, first_seed: int, chained: bool = False, log=print) -> dict:
    """The conditions on the same scenes and seeds for one model folder; ``chained``: also the two edits
    without a choice in between (each candidate of the first edit edited once more)."""
    from engine.editing.editor import EditParams, edit
    from engine.editing.shared.regions import Region
    from engine.models.loading import load_models

    models = load_models(models_dir, device="cpu")
    base = preset_edit_defaults(models_dir)
    base.pop("prompt", None)
    size = int(models.image_size)
    regions_tally, sequential_tally = Tally(), Tally()
    chained_tally = Tally() if chained else None
    for index in range(first_seed, first_seed + scenes):
        case = regions_case(index, size)
        params = EditParams(**{**base, "seed": 10_000 + 100 * index})
        masks = [box_mask(size, b) for b in case.boxes]
        start = time.process_time()
        joint = edit(
            case.image, None, models, params, regions=[Region(m, case.prompt(k)) for k, m in enumerate(masks)]
        )
        regions_tally.cpu_seconds += time.process_time() - start
        regions_tally.add(case, [c.image for c in joint.candidates])
        start = time.process_time()
        first = edit(
            case.image, masks[0], models, EditParams(**{**params.to_dict(), "prompt": case.prompt(0)})
        )
        kept = first.candidates[0].image.convert("RGB")  # what a user keeps before the second edit
        second = edit(kept, masks[1], models, EditParams(**{**params.to_dict(), "prompt": case.prompt(1)}))
        sequential_tally.cpu_seconds += time.process_time() - start
        sequential_tally.add(case, [c.image for c in second.candidates])
        if chained_tally is not None:  # no choice in between: candidate i of the first edit, edited again
            start = time.process_time()
            chained = []
            for candidate in sorted(first.candidates, key=lambda c: c.seed):
                one = dict(params.to_dict(), prompt=case.prompt(1), seed=candidate.seed, batch_size=1)
                again = edit(
                    candidate.image.convert("RGB"),
                    masks[1],
                    models,
                    EditParams(**{**one, "iterations_num": 1}),
                )
                chained.append(again.candidates[0].image)
            chained_tally.cpu_seconds += time.process_time() - start
            chained_tally.add(case, chained)
        log(f"scene {index}: {case.prompt(0)!r} | {case.prompt(1)!r}")
    joint_row, sequential_row = regions_tally.to_dict(), sequential_tally.to_dict()
    ratio = regions_tally.cpu_seconds / max(1e-9, sequential_tally.cpu_seconds)
    row = {"regions": joint_row, "sequential": sequential_row, "cpu_ratio": round(ratio, 3)}
    if chained_tally is not None:
        row["chained"] = chained_tally.to_dict()
    return row


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy-latent", help="comma-separated model folders or names")
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--first-seed", type=int, default=30)
    parser.add_argument("--json", required=True)
    parser.add_argument(
        "--chained", action="store_true", help="also two edits without a choice in between (slower)"
    )
    args = parser.parse_args(argv)
    out = Path(args.json)
    report = {
        "command": " ".join(["python -m toyworld.regions_eval", *(argv or sys.argv[1:])]),
        "machine": f"{cpu_name()}, {platform.system()}",
        "scenes": args.scenes,
        "first_seed": args.first_seed,
        "rows": {},
    }
    for name in args.models.split(","):
        folder = name if "/" in name else f"resources/models/{name}"
        report["rows"][name] = run_model(folder, args.scenes, args.first_seed, args.chained)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every row: a cut-short run keeps it
        print(json.dumps(report["rows"][name], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
