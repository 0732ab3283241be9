"""Where the time of an edit goes outside the diffusion on a big document (issue 16, item 5).

A 4000x3000 document with a 1500x1500 selection, toy models: the plugin's pure-Python parts (selection ->
region and mask, Krita's BGRA bytes to RGBA, PNG encoding of what it sends, decoding the candidates,
clamping their alpha, RGBA back to the bytes a new layer takes) and the engine job's parts (PNG decoding,
engine.editing.editor.edit split into the diffusion, the end-of-job free_memory and the rest, PNG encoding
of the patches at the level the plugin asks of the engine it started: 0 since this item, 1 before), each
timed on its own in this process (CPU seconds and wall). Krita's own calls (Node.pixelData, createNode,
setPixelData) cannot run here and are not included. The patches' level-1 encoding (a remote engine's
default) is shown, not added.

    PYTHONPATH=. .venv/bin/python bench/big_document.py [--width 4000 --height 3000 --side 1500]
"""

from __future__ import annotations

import argparse
import inspect
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
    from blended_diffusion import pixels
    from blended_diffusion.editing import EditRequest, place_candidates, plan_region

    from engine import jobs
    from engine.editing import editor
    from engine.editing.paper.modes import resolve_params
    from engine.models.loading import load_models

    torch.set_num_threads(1)
    u8 = pixels.PixelFormat("U8", False)

    def to_rgba8(data: bytes) -> bytes:
        return pixels.to_rgba8(data, u8)
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
    timed("plugin", "Krita's BGRA -> RGBA over the region (pixels.to_rgba8)", lambda: to_rgba8(image_rgba))
    image_png, mask_png, _ = timed("plugin", "encode image + mask PNGs (level 0)", request.pngs)

    # ---- engine job
    from engine.editing.shared import imaging

    image = timed(
        "engine",
        "decode image + mask PNGs",
        lambda: (imaging.decode_image(image_png), imaging.decode_image(mask_png, "mask")),
    )
    models = load_models(args.models, device="cpu")
    from toyworld.evaluate import preset_edit_defaults

    params = resolve_params("fast", {"prompt": "a red circle", "seed": 1}, preset_edit_defaults(args.models))
    import engine.editing.paper.blended as blended

    diffusion_cpu: Dict[str, float] = {"cpu": 0.0, "wall": 0.0}
    original = blended.blended_diffusion

    def counted(*a: Any, **k: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            diffusion_cpu["cpu"] += time.process_time() - cpu
            diffusion_cpu["wall"] += time.perf_counter() - wall

    free_cpu: Dict[str, float] = {"cpu": 0.0, "wall": 0.0}
    original_free = editor.free_memory

    def counted_free() -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            original_free()
        finally:
            free_cpu["cpu"] += time.process_time() - cpu
            free_cpu["wall"] += time.perf_counter() - wall

    blended.blended_diffusion = counted
    editor.free_memory = counted_free
    try:
        result = timed("engine", "edit() in all", lambda: editor.edit(image[0], image[1], models, params))
    finally:
        blended.blended_diffusion = original
        editor.free_memory = original_free
    side, part, cpu, wall = ROWS.pop()
    ROWS.append(("engine", "edit(): the diffusion (model size)", diffusion_cpu["cpu"], diffusion_cpu["wall"]))
    ROWS.append(
        ("engine", "edit(): free_memory (gc.collect; not size-dependent)", free_cpu["cpu"], free_cpu["wall"])
    )
    ROWS.append(
        (
            "engine",
            "edit(): the rest (prepare, crop, resize, composite, patches)",
            cpu - diffusion_cpu["cpu"] - free_cpu["cpu"],
            wall - diffusion_cpu["wall"] - free_cpu["wall"],
        )
    )

    def encode(level: int) -> List[bytes]:
        if "level" in inspect.signature(jobs._candidates_out).parameters:
            return [png for _name, png in jobs._candidates_out(result.candidates, level)[1]]
        # the code before issue 16's item 5: level 1 for every client
        return [png for _name, png in jobs._candidates_out(result.candidates)[1]]

    if hasattr(result.candidates[0], "patch_rgba"):  # made on demand: when the job sends them
        timed("engine", "blend the candidates' patches", lambda: [c.patch_rgba() for c in result.candidates])
    patches = timed("engine", "encode candidate patch PNGs (as the plugin's engine sends)", lambda: encode(0))
    remote = [0.0, 0.0]
    cpu, wall = time.process_time(), time.perf_counter()
    remote_pngs = encode(1)
    remote[:] = time.process_time() - cpu, time.perf_counter() - wall
    remote_bytes = sum(len(png) for png in remote_pngs)

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
    response = timed(
        "plugin",
        "decode candidates + clamp alpha (place_candidates)",
        lambda: place_candidates(request, reply),
    )
    timed(
        "plugin",
        "candidates' RGBA -> the bytes a new layer takes (pixels.from_rgba8)",
        lambda: [pixels.from_rgba8(c.rgba, u8) for c in response.candidates],
    )

    print(f"{w}x{h} document, {s}x{s} selection, region {rw}x{rh}, {len(patches)} candidates, toy models")
    print("| side | part | CPU s | wall s |")
    print("|---|---|---|---|")
    for side, part, cpu, wall in ROWS:
        print(f"| {side} | {part} | {cpu:.3f} | {wall:.3f} |")
    outside = sum(cpu for side, part, cpu, _ in ROWS if "diffusion" not in part)
    print(f"| both | everything but the diffusion | {outside:.3f} | |")
    for item, png in zip(reply["candidates"], remote_pngs):
        item["png"] = png
    cpu = time.process_time()
    place_candidates(request, reply)
    remote_decode = time.process_time() - cpu
    box = response.candidates[0].box
    print(
        f"patch box {box[2]}x{box[3]}; patch PNGs sent {sum(len(p) for p in patches) / 1e6:.1f} MB, "
        f"{remote_bytes / 1e6:.1f} MB at level 1 (a remote engine's default: {remote[0]:.3f} CPU s, "
        f"{remote[1]:.3f} s wall to encode, {remote_decode:.3f} CPU s for the plugin to decode and clamp; "
        "not in the total)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
