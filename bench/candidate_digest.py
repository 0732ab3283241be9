"""Record the candidates of a few fixed-seed edits (tiny and toy presets, CPU) and compare two recordings.

A change that should not alter results (a speed or device fix) must leave these bytes unchanged; one that
should is measured here: the largest difference of the raw model-resolution results (floats in [-1, 1])
and of the final 8-bit candidate images.

    PYTHONPATH=. .venv/bin/python bench/candidate_digest.py record /tmp/before.npz
    PYTHONPATH=. .venv/bin/python bench/candidate_digest.py record /tmp/after.npz
    PYTHONPATH=. .venv/bin/python bench/candidate_digest.py compare /tmp/before.npz /tmp/after.npz
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLES = ROOT / "resources" / "examples"

# name -> (preset, EditParams overrides); the toy runs use the preset's recommended settings
CASES: Dict[str, tuple] = {
    "toy-404": ("toy", {"seed": 404}),
    "toy-11-ddim": ("toy", {"seed": 11, "ddim": True}),
    "tiny-404-2iter": (
        "tiny",
        {
            "seed": 404,
            "timestep_respacing": "25",
            "skip_timesteps": 5,
            "batch_size": 3,
            "iterations_num": 2,
            "aug_num": 4,
        },
    ),
    "tiny-7-alg1": (
        "tiny",
        {
            "seed": 7,
            "timestep_respacing": "20",
            "skip_timesteps": 10,
            "batch_size": 2,
            "iterations_num": 1,
            "aug_num": 3,
            "local_clip_guided_diffusion": True,
        },
    ),
}


def record(out: Path) -> None:
    import torch
    from PIL import Image

    import engine.editing.paper.blended as blended
    from engine.editing.editor import EditParams, edit
    from engine.editing.shared.params import preset_edit_defaults
    from engine.models.loading import load_models
    from engine.models.registry import get_preset

    torch.set_num_threads(1)
    image = Image.open(EXAMPLES / "toy_scene.png")
    mask = Image.open(EXAMPLES / "toy_scene_mask.png")
    prompt = (EXAMPLES / "toy_scene.txt").read_text().strip()
    arrays: Dict[str, np.ndarray] = {}
    raw: list = []
    real = blended.blended_diffusion

    def capture(*args, **kwargs):
        result = real(*args, **kwargs)
        raw.append(result.detach().float().cpu().numpy())
        return result

    blended.blended_diffusion = capture
    with tempfile.TemporaryDirectory() as weights:
        loaded = {}
        for name, (preset, overrides) in CASES.items():
            if preset not in loaded:
                loaded[preset] = load_models(preset, weights_dir=weights, device="cpu")
            defaults = preset_edit_defaults(get_preset(preset)) if preset == "toy" else {}
            params = EditParams(**{**defaults, "prompt": prompt, **overrides})
            raw.clear()
            # the test presets' LPIPS has a random backbone, made from the global generator on first use
            torch.manual_seed(0)
            result = edit(image, mask, loaded[preset], params)
            by_seed = sorted(result.candidates, key=lambda c: c.seed)
            arrays[f"{name}/images"] = np.stack([np.asarray(c.image) for c in by_seed])
            arrays[f"{name}/raw"] = np.concatenate(raw, axis=0)
            digest = hashlib.sha256(arrays[f"{name}/images"].tobytes()).hexdigest()[:16]
            print(f"{name}: {len(by_seed)} candidates, images sha256 {digest}")
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}")


def compare(before: Path, after: Path) -> None:
    a, b = np.load(before), np.load(after)
    print("| case | images identical | max abs diff, 8-bit images | max abs diff, raw results |")
    print("|---|---|---|---|")
    for key in sorted(k for k in a.files if k.endswith("/images")):
        name = key.rsplit("/", 1)[0]
        images_a, images_b = a[key].astype(int), b[key].astype(int)
        raw_a, raw_b = a[f"{name}/raw"], b[f"{name}/raw"]
        same = np.array_equal(images_a, images_b) and np.array_equal(raw_a, raw_b)
        print(
            f"| {name} | {'yes' if same else 'no'} | {np.abs(images_a - images_b).max()} | "
            f"{np.abs(raw_a - raw_b).max():.3g} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("record").add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.out)
    else:
        compare(args.before, args.after)


if __name__ == "__main__":
    main()
