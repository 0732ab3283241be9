"""Where the time of an edit goes outside the diffusion on a big document (issue 16, item 5).

A 4000x3000 document with a 1500x1500 selection, toy models: the plugin's pure-Python parts (selection ->
region and mask, PNG encoding of what it sends, decoding the candidates, clamping their alpha) and the
engine job's parts (PNG decoding, engine.editing.editor.edit split into the diffusion and the rest, PNG
encoding of the patches), each timed on its own in this process (CPU seconds; wall in brackets). Krita's own
calls (reading the layer, writing the candidate layers) cannot run here and are not included.

    PYTHONPATH=. .venv/bin/python bench/big_document.py [--width 4000 --height 3000 --side 1500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "krita_plugin"))

ROWS: List[tuple] = []


def timed(side: str, part: str, work: Callable[[], Any]) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    ROWS.append((side, part, time.process_time() - cpu, time.perf_counter() - wall))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--side", type=int, default=1500)
    parser.add_argument("--models", default=str(ROOT / "resources" / "models" / "toy"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from blended_diffusion.editing import EditRequest, place_candidates, plan_region

    from engine.editing import editor
    from engine.editing.modes import resolve_params
    from engine.jobs import _png_bytes
    from engine.models.loading import load_models

    torch.set_num_threads(1)
    w, h, s = args.width, args.height, args.side
    rng = np.random.default_rng(0)
    # a photo-like layer: smooth gradients plus noise (random bytes would not compress like a picture)
    ys, xs = np.mgrid[0:h, 0:w]
    layer = np.stack(
        [(xs * 255 // w), (ys * 255 // h), ((xs + ys) * 255 // (w + h)), np.full_like(xs, 255)], -1
    )
    layer = (layer + rng.integers(0, 8, layer.shape)).clip(0, 255).astype(np.uint8)
    selection = np.zeros((h, w), np.uint8)
    x0, y0 = (w - s) // 2, (h - s) // 2
    selection[y0 : y0 + s, x0 : x0 + s] = 255
    selection_bytes = selection.tobytes()

    # ---- plugin, before the job
    region, mask = timed(
        "plugin", "selection -> region + mask (plan_region)", lambda: plan_region(selection_bytes, w, h)
    )
    rx, ry, rw, rh = region
    image_rgba = timed(
        "plugin", "layer pixels over the region (crop; Krita reads only the region)",
        lambda: layer[ry : ry + rh, rx : rx + rw].tobytes(),
    )  # fmt: skip
    request = EditRequest(region=region, image_rgba=image_rgba, mask=mask, params={})
    image_png, mask_png, _ = timed("plugin", "encode image + mask PNGs (level 0)", request.pngs)

    # ---- engine job
    from engine.editing import imaging

    image = timed(
        "engine",
        "decode image + mask PNGs",
        lambda: (imaging.decode_image(image_png), imaging.decode_image(mask_png, "mask")),
    )
    models = load_models(args.models, device="cpu")
    from toyworld.evaluate import preset_edit_defaults

    params = resolve_params("fast", {"prompt": "a red circle", "seed": 1}, preset_edit_defaults(args.models))
    import engine.editing.blended as blended

    diffusion_cpu: Dict[str, float] = {"cpu": 0.0, "wall": 0.0}
    original = blended.blended_diffusion

    def counted(*a: Any, **k: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            diffusion_cpu["cpu"] += time.process_time() - cpu
            diffusion_cpu["wall"] += time.perf_counter() - wall

    blended.blended_diffusion = counted
    try:
        result = timed("engine", "edit() in all", lambda: editor.edit(image[0], image[1], models, params))
    finally:
        blended.blended_diffusion = original
    side, part, cpu, wall = ROWS.pop()
    ROWS.append(("engine", "edit(): the diffusion (model size)", diffusion_cpu["cpu"], diffusion_cpu["wall"]))
    ROWS.append(
        (
            "engine",
            "edit(): the rest (prepare, crop, resize, composite, patches)",
            cpu - diffusion_cpu["cpu"],
            wall - diffusion_cpu["wall"],
        )
    )
    patches = timed(
        "engine",
        "encode candidate patch PNGs",
        lambda: [_png_bytes(c.patch.convert("RGBA")) for c in result.candidates],
    )

    # ---- plugin, after the job
    reply = {
        "candidates": [
            {
                "rank": c.rank,
                "seed": c.seed,
                "scores": {},
                "box": [c.box[0], c.box[1], c.box[2], c.box[3]],
                "png": png,
            }
            for c, png in zip(result.candidates, patches)
        ]
    }
    timed(
        "plugin",
        "decode candidates + clamp alpha (place_candidates)",
        lambda: place_candidates(request, reply),
    )

    print(f"{w}x{h} document, {s}x{s} selection, region {rw}x{rh}, {len(patches)} candidates, toy models")
    print("| side | part | CPU s | wall s |")
    print("|---|---|---|---|")
    for side, part, cpu, wall in ROWS:
        print(f"| {side} | {part} | {cpu:.3f} | {wall:.3f} |")
    outside = sum(cpu for side, part, cpu, _ in ROWS if "diffusion" not in part)
    print(f"| both | everything but the diffusion | {outside:.3f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
