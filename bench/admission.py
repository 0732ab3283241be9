"""Admission figures: a job's peak memory as engine/editing/admission.py estimates it against what it takes
on this CPU, for the toy, tiny and default presets (docs/limits.md).

    python bench/admission.py [--presets toy tiny default] [--batches 1 4] [--aug-num 8] [--unguided]

Each (preset, batch) runs in a fresh subprocess: the models are loaded (``default``: the registry's ADM-256
and CLIP ViT-B/16 specs built with random weights, no checkpoint needed), the peak resident size is reset
(``/proc/self/clear_refs``) after the editing modules are imported and freed memory is trimmed, one
edit of a 256x256 image runs with a prompt and one guided step, and the peak resident size over the size
before it (VmHWM - VmRSS) is the measured job memory. The estimate is admission's: its fixed step overhead
+ candidates at once x per-candidate bytes + the image's host bytes (the weights, loaded before, are in
both baselines). Linux only (clear_refs); one torch thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _models(preset: str, weights_dir: str):
    import torch

    from engine.models.loading import Models, load_models

    if preset != "default":
        return load_models(preset, weights_dir=weights_dir, device="cpu")
    from engine.models.clip import ClipModel, build_open_clip
    from engine.models.registry import get_preset
    from engine.models.unet import unet_from_flags

    spec = get_preset("default")
    torch.manual_seed(0)
    unet = unet_from_flags(spec.diffusion.model_flags).eval().requires_grad_(False)
    clip = ClipModel(build_open_clip(spec.clip.config, half=True), spec.clip.config, torch.device("cpu"))
    flags = spec.diffusion.model_flags
    return Models(
        unet,
        dict(spec.diffusion.diffusion_flags),
        dict(flags),
        clip,
        torch.device("cpu"),
        "default",
        int(flags["image_size"]),
        bool(flags.get("class_cond", False)),
    )


def measure(preset: str, batch: int, aug_num: int, weights_dir: str, guided: bool = True) -> dict:
    """One edit (one guided step) in this process: measured and estimated job memory in bytes."""
    import ctypes
    import gc

    import torch
    from PIL import Image, ImageDraw

    from engine.editing import admission
    from engine.editing.editor import edit
    from engine.editing.shared.params import EditParams

    torch.set_num_threads(1)
    models = _models(preset, weights_dir)
    image = Image.new("RGB", (256, 256), (90, 140, 200))
    mask = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(mask).ellipse((64, 64, 192, 192), fill=255)
    params = EditParams(
        prompt="a red ball" if guided else "",
        timestep_respacing="4",
        skip_timesteps=3,
        batch_size=batch,
        iterations_num=1,
        aug_num=aug_num,
        precision="fp32",
        seed=1,
    )
    started = time.process_time()
    fp = admission.footprint(models)
    count_seconds = time.process_time() - started
    estimate = admission.STEP_OVERHEAD + batch * admission.candidate_bytes(fp, aug_num, guided)
    estimate += admission.host_bytes(256 * 256)
    import engine.editing.shared.augment  # noqa: E401, F401

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory back to the system: the baseline is what is used
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # the peak resident size starts again from the current one
    before = _status("VmRSS")
    started = time.process_time()
    edit(image, mask, models, params)
    seconds = time.process_time() - started
    measured = _status("VmHWM") - before
    return {
        "preset": preset,
        "batch": batch,
        "aug_num": aug_num if guided else 0,
        "weights": fp.weights,
        "unet_activations": fp.unet_activations,
        "clip_view_activations": fp.clip_view_activations,
        "estimated": estimate,
        "measured": measured,
        "count_cpu_s": count_seconds,
        "edit_cpu_s": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["toy", "tiny", "default"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--aug-num", type=int, default=8)
    parser.add_argument("--unguided", action="store_true", help="no prompt: unguided steps only")
    parser.add_argument(
        "--weights-dir", default=None, help="for tiny's generated weights (default: a temp dir)"
    )
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        guided = not args.unguided
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.aug_num, args.weights_dir, guided)))
        return 0
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for batch in args.batches if preset != "default" else [1]:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        preset,
                        str(batch),
                        "--aug-num",
                        str(args.aug_num),
                        "--weights-dir",
                        args.weights_dir or tmp,
                    ]
                    + (["--unguided"] if args.unguided else []),
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                    env={
                        "PYTHONPATH": str(REPO_ROOT),
                        "OMP_NUM_THREADS": "1",
                        "PATH": "/usr/bin:/bin",
                        "BLENDED_DIFFUSION_STEP_TIMES": str(Path(tmp) / "times.json"),
                    },
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| preset | candidates at once | aug_num | weights | counted activations (UNet + CLIP view) "
        "| job peak estimated | measured (VmHWM - VmRSS) | error | edit CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        error = (r["estimated"] - r["measured"]) / r["measured"]
        print(
            f"| {r['preset']} | {r['batch']} | {r['aug_num']} | {r['weights'] / 1e6:.0f} MB | "
            f"{r['unet_activations'] / 1e6:.1f} + {r['clip_view_activations'] / 1e6:.2f} MB | "
            f"{r['estimated'] / 1e6:.0f} MB | {r['measured'] / 1e6:.0f} MB | {error:+.0%} | "
            f"{r['edit_cpu_s']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
