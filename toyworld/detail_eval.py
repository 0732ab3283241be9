"""The detail stage (engine/editing/paper/detail.py; engine/editing/latent/detail.py for a latent preset
such as toy-latent) measured in the toy world: edges, judges, seams, background.

Each held-out scene is drawn at 128 px (``scenes.edit_case(seed, 128)``: drawn at 4x and box-filtered like
every toy scene), its 64 px hole edited by the toy models at their 32 px, so the context box (about 96 px)
comes back 3x. Each scene is edited with ``detail=on``; the stage's input, the model-size candidates resized
into the box with Lanczos, is composited as well: that is exactly what ``detail=off`` returns for the same
seeds (the method unchanged), without running the first pass twice. Each candidate is judged:

- edge width of the new shape: the pixels of the hole between 10 % and 90 % of the way from the
  background's colour to the shape's (projected on that colour difference, in a band around the outline),
  divided by the outline's length (the shape: the largest component of the prompted colour, judge.py);
- colour (the pixel rule, scenes.classify_colour) and shape (judge.py) against the prompt;
- seams: squared colour differences across the detail tiles' borders inside the edited region, against
  the differences between every other pair of neighbours there (the same ratio of the plain upscale,
  which has no tiles, is the reference);
- the background byte for byte.

    python -m toyworld.detail_eval --first 30 --scenes 120 --json docs/results/detail/detail-toy-heldout.json
    python -m toyworld.detail_eval --models toy-latent --strengths 0.15,0.3 \
        --json docs/results/detail/detail-toy-latent-heldout.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from toyworld.judge import colour_mask, largest_component, region_shape
from toyworld.scenes import edit_case, region_colour

ROOT = Path(__file__).resolve().parent.parent
SCENE_SIZE = 128


def edge_width(pixels: np.ndarray, colour: str) -> Optional[float]:
    """Transition pixels per outline pixel of the largest ``colour`` component; None without a clear one."""
    shape = largest_component(colour_mask(pixels, colour))
    if shape.sum() < 30:
        return None
    inner = ndimage.binary_erosion(shape, iterations=3)
    outer = ~ndimage.binary_dilation(shape, iterations=6)
    if inner.sum() < 5 or outer.sum() < 20:
        return None
    rgb = pixels.astype(np.float64)
    shape_colour, background = np.median(rgb[inner], axis=0), np.median(rgb[outer], axis=0)
    difference = shape_colour - background
    if np.linalg.norm(difference) < 40:
        return None
    fraction = (rgb - background) @ difference / (difference @ difference)
    band = ndimage.binary_dilation(shape, iterations=6) & ~ndimage.binary_erosion(shape, iterations=6)
    transition = band & (fraction > 0.1) & (fraction < 0.9)
    outline = shape & ~ndimage.binary_erosion(shape)
    return float(transition.sum() / max(1, outline.sum()))


def seam_energy(
    image: np.ndarray, inside: np.ndarray, borders: Tuple[List[int], List[int]]
) -> Tuple[float, float]:
    """(summed energy, count) across tile borders and (summed, count) elsewhere: squared RGB differences of
    horizontal and vertical neighbour pairs with both pixels inside the region."""
    rgb = image.astype(np.float64)
    at, away = [0.0, 0], [0.0, 0]
    for axis, lines in ((1, borders[0]), (0, borders[1])):
        diff = np.diff(rgb, axis=axis)
        energy = (diff**2).sum(axis=-1)
        both = inside[:, 1:] & inside[:, :-1] if axis == 1 else inside[1:, :] & inside[:-1, :]
        on_line = np.zeros_like(both)
        for line in lines:  # the pair (line - 1, line) straddles a border
            if axis == 1:
                on_line[:, line - 1] = True
            else:
                on_line[line - 1, :] = True
        for target, select in ((at, both & on_line), (away, both & ~on_line)):
            target[0] += float(energy[select].sum())
            target[1] += int(select.sum())
    return (at[0], at[1]), (away[0], away[1])


def tile_borders(box, size: int) -> Tuple[List[int], List[int]]:
    """Image columns and rows where a detail tile starts or ends inside the box."""
    from engine.editing.paper.detail import tile_starts

    x, y, w, h = box
    columns = sorted({x + s + d for s in tile_starts(w, size) for d in (0, size)} - {x, x + w})
    rows = sorted({y + s + d for s in tile_starts(h, size) for d in (0, size)} - {y, y + h})
    return columns, rows


def judge(case, candidates, box, size: int) -> List[Dict]:
    x0, y0, x1, y1 = case.box
    keep = np.asarray(case.mask) == 0
    inside = ~keep
    borders = tile_borders(box, size)
    source = np.asarray(case.image)
    out = []
    for candidate in candidates:
        image = np.asarray(candidate.image.convert("RGB"))
        colour = region_colour(candidate.image, case.box)
        shape = region_shape(candidate.image, case.box, colour) if colour else None
        width = edge_width(image[y0:y1, x0:x1], case.colour) if colour == case.colour else None
        (at, n_at), (away, n_away) = seam_energy(image, inside, borders)
        out.append(
            {
                "rank": candidate.rank,
                "seed": candidate.seed,
                "colour": colour,
                "shape": shape,
                "colour_hit": colour == case.colour,
                "shape_hit": colour == case.colour and shape == case.kind,
                "edge_width": width,
                "seam": [at, n_at, away, n_away],
                "background_exact": bool(np.array_equal(source[keep], image[keep])),
            }
        )
    return out


def summarise(trials: List[Dict]) -> Dict:
    count = len(trials)
    seam_at = sum(t["seam"][0] for t in trials) / max(1, sum(t["seam"][1] for t in trials))
    seam_away = sum(t["seam"][2] for t in trials) / max(1, sum(t["seam"][3] for t in trials))
    return {
        "trials": count,
        "colour": 100.0 * sum(t["colour_hit"] for t in trials) / max(1, count),
        "colour_and_shape": 100.0 * sum(t["shape_hit"] for t in trials) / max(1, count),
        "background_exact": all(t["background_exact"] for t in trials),
        "seam_ratio": seam_at / max(1e-12, seam_away),
    }


def paired_widths(off: List[Dict], on: List[Dict]) -> Dict:
    pairs = [
        (a["edge_width"], b["edge_width"])
        for a, b in zip(off, on)
        if a["edge_width"] is not None and b["edge_width"] is not None
    ]
    if not pairs:
        return {"pairs": 0}
    widths_off, widths_on = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "pairs": len(pairs),
        "mean_off": statistics.mean(widths_off),
        "mean_on": statistics.mean(widths_on),
        "ratio_of_means": statistics.mean(widths_on) / statistics.mean(widths_off),
        "median_ratio": statistics.median(b / a for a, b in pairs if a > 0),
    }


def run(
    first: int,
    scenes: int,
    strengths: List[float],
    candidates: int,
    picture: Optional[str],
    save: Optional[Callable[[Dict], None]] = None,
    models_name: str = "toy",
) -> Dict:
    import torch

    from engine.editing.editor import EditParams, edit
    from engine.editing.shared.results import composite
    from engine.models.loading import load_models
    from toyworld.evaluate import preset_edit_defaults

    torch.set_num_threads(1)
    models = load_models(models_name, device="cpu")
    stage_module, stage_name = _stage(models.method)
    real_detail = getattr(stage_module, stage_name)
    plain: Dict[str, Any] = {}

    def recording(job, prepared, plan, crops, seeds, **latent):
        """The stage's input, kept: composited it is detail=off's result of the same seeds."""
        plain.update(prepared=prepared, crops=list(crops), seeds=list(seeds))
        return real_detail(job, prepared, plan, crops, seeds, **latent)

    setattr(stage_module, stage_name, recording)
    size = int(models.image_size)
    base = {**preset_edit_defaults(models_name), "batch_size": candidates, "iterations_num": 1}
    trials: Dict[str, List[Dict]] = {"off": [], **{f"on@{s:g}": [] for s in strengths}}
    cpu: Dict[str, float] = {"first pass and detail": 0.0}
    shown = []
    for count, index in enumerate(range(first, first + scenes), start=1):
        case = edit_case(index, SCENE_SIZE)
        seed = 10_000 + 100 * index
        for number, strength in enumerate(strengths):
            key = f"on@{strength:g}"
            params = EditParams(**{**base, "prompt": case.prompt, "seed": seed, "detail": "on"})
            params.detail_strength = strength
            start = time.process_time()
            result = edit(case.image, case.mask, models, params)
            cpu["first pass and detail"] += time.process_time() - start
            trials[key].extend(judge(case, result.candidates, result.box, size))
            prepared = plain["prepared"]
            scores = [c.scores for c in result.candidates]
            off = composite(
                prepared.source, prepared.soft_mask, prepared.box, plain["crops"], plain["seeds"], scores
            )
            if number == 0:
                trials["off"].extend(judge(case, off, result.box, size))
                if picture and len(shown) < 2 * 6:
                    shown.extend([off[0].image, result.candidates[0].image])
        print(f"scene {index}: {case.prompt}", file=sys.stderr, flush=True)
        if save is not None and (count % 10 == 0 or count == scenes):
            save(_report(first, count, candidates, base, cpu, trials))
    setattr(stage_module, stage_name, real_detail)
    if picture:
        _picture(shown, picture)
    return _report(first, scenes, candidates, base, cpu, trials)


def _stage(method: str):
    """(module, name) of the detail stage the edit calls: the paper method's, or a latent preset's."""
    if method == "latent":
        from engine.editing.latent import edit as latent_edit

        return latent_edit, "latent_detail"
    from engine.editing.paper import detail as paper_detail

    return paper_detail, "detail"


def _report(first, scenes, candidates, base, cpu, trials) -> Dict:
    return {
        "scenes": [first, first + scenes - 1],
        "candidates_per_scene": candidates,
        "scene_size": SCENE_SIZE,
        "params": base,
        "cpu_seconds": cpu,
        "conditions": {key: summarise(value) for key, value in trials.items()},
        "edge_width": {
            key: paired_widths(trials["off"], value) for key, value in trials.items() if key != "off"
        },
        "trials": trials,
    }


def _picture(images, path: str) -> None:
    """Rows of scenes: plain upscale | detail, each 2x with nearest neighbour (no smoothing of our own)."""
    from PIL import Image

    pairs = [images[i : i + 2] for i in range(0, len(images) - 1, 2)]
    side = SCENE_SIZE * 2
    sheet = Image.new("RGB", (2 * side + 8, len(pairs) * (side + 8)), (255, 255, 255))
    for row, (plain, sharp) in enumerate(pairs):
        for column, image in enumerate((plain, sharp)):
            sheet.paste(
                image.resize((side, side), Image.Resampling.NEAREST), (column * (side + 8), row * (side + 8))
            )
    sheet.save(path)


def table(report: Dict) -> str:
    lines = [
        "| condition | trials | colour % | colour and shape % | edge width (px) | width vs off | seam ratio "
        "| background exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in report["conditions"].items():
        widths = report["edge_width"].get(key)
        if widths and widths.get("pairs"):
            width, ratio = (
                f"{widths['mean_on']:.2f}",
                f"{widths['ratio_of_means']:.2f} ({widths['pairs']} pairs)",
            )
        else:
            off = next(iter(report["edge_width"].values()), {})
            width, ratio = (f"{off['mean_off']:.2f}" if off.get("pairs") else "-"), "1"
        lines.append(
            f"| {key} | {row['trials']} | {row['colour']:.1f} | {row['colour_and_shape']:.1f} | {width} "
            f"| {ratio} | {row['seam_ratio']:.2f} | {'yes' if row['background_exact'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=30, help="first scene (settings are chosen on 0-29)")
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--strengths", type=str, default="0.15", help="comma-separated detail strengths")
    parser.add_argument("--candidates", type=int, default=1, help="candidates per scene")
    parser.add_argument("--models", default="toy", help="preset name or folder with preset.json")
    parser.add_argument("--json", type=str, default=None)
    parser.add_argument("--picture", type=str, default=None, help="PNG: plain upscale | detail, 6 scenes")
    args = parser.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]

    def save(report: Dict) -> None:
        if args.json:
            text = table(report)
            Path(args.json).write_text(json.dumps({**report, "table": text}, indent=1), encoding="utf-8")

    report = run(args.first, args.scenes, strengths, args.candidates, args.picture, save, args.models)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
