"""Per-call cost of the engine's models: UNet forward, UNet forward+backward (gradient with respect to
the input only, weights frozen, as the editing loop does) and the CLIP image encoder.

Random weights at the real architectures (no download needed): ``default`` = ADM-256 + ViT-B/16,
``tiny`` = the tiny preset. FLOPs come from torch's FlopCounterMode, counted on the meta device (no
compute), so TFLOP/s can be set against the hardware's peak.

    python bench/model_bench.py                       # both sizes, current device
    python bench/model_bench.py --sizes tiny --iters 20 --device cpu --markdown
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.models.clip import build_open_clip  # noqa: E402
from engine.models.devices import pick_device  # noqa: E402
from engine.models.unet import unet_from_flags  # noqa: E402

MODEL_FILES = {"default": ("adm256_uncond", "clip_vit_b16"), "tiny": ("tiny_adm", "tiny_clip")}


def model_data(name: str) -> dict:
    return json.loads((ROOT / "engine" / "models" / f"{name}.json").read_text())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_call(fn: Callable[[], object], device: torch.device, iters: int, warmup: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build_unet(flags: dict, device: torch.device, fp16: bool) -> torch.nn.Module:
    unet = unet_from_flags(flags).to(device).eval().requires_grad_(False)
    if fp16:
        unet.convert_to_fp16()
    return unet


def bench_size(size: str, device: torch.device, batch: int, iters: int, warmup: int) -> list[dict]:
    unet_name, clip_name = MODEL_FILES[size]
    flags = model_data(unet_name)["model_flags"]
    clip_config = model_data(clip_name)["config"]
    res = int(flags["image_size"])
    fp16 = device.type == "cuda" and bool(flags.get("use_fp16"))
    rows = []

    def unet_calls(unet: torch.nn.Module, dev: torch.device):
        x = torch.randn(batch, 3, res, res, device=dev)
        t = torch.full((batch,), 747.0, device=dev)

        def forward():
            with torch.no_grad():
                return unet(x, t)

        def forward_backward():
            x_in = x.detach().requires_grad_(True)
            unet(x_in, t)[:, :3].sum().backward()  # .backward(): FlopCounterMode refuses autograd.grad
            return x_in.grad

        return forward, forward_backward

    with torch.device("meta"):
        meta_unet = unet_from_flags(flags).eval().requires_grad_(False)
    meta_forward, meta_fb = unet_calls(meta_unet, torch.device("meta"))
    unet_flops = {"UNet forward": count_flops(meta_forward), "UNet forward+backward": count_flops(meta_fb)}

    torch.manual_seed(0)
    unet = build_unet(flags, device, fp16)
    forward, forward_backward = unet_calls(unet, device)
    for label, fn in (("UNet forward", forward), ("UNet forward+backward", forward_backward)):
        seconds = time_call(fn, device, iters, warmup)
        rows.append(row(size, label, f"{batch}x3x{res}x{res}", seconds, unet_flops[label], fp16))
    del unet

    clip_res = int(clip_config["vision_cfg"]["image_size"])
    half_clip = device.type == "cuda"
    with torch.device("meta"):
        meta_clip = build_open_clip(clip_config).eval().requires_grad_(False)
    clip_flops = count_flops(
        lambda: meta_clip.encode_image(torch.randn(batch, 3, clip_res, clip_res, device="meta"))
    )
    clip = build_open_clip(clip_config, half=half_clip).to(device).eval().requires_grad_(False)
    if half_clip:
        import open_clip

        open_clip.model.convert_weights_to_lp(clip, dtype=torch.float16)
    images = torch.randn(
        batch, 3, clip_res, clip_res, device=device, dtype=torch.float16 if half_clip else None
    )

    def clip_forward():
        with torch.no_grad():
            return clip.encode_image(images)

    seconds = time_call(clip_forward, device, iters, warmup)
    rows.append(
        row(size, "CLIP image encoder", f"{batch}x3x{clip_res}x{clip_res}", seconds, clip_flops, half_clip)
    )
    return rows


def row(size: str, what: str, shape: str, seconds: float, flops: int, half: bool) -> dict:
    return {
        "size": size,
        "what": what,
        "input": shape,
        "precision": "fp16" if half else "fp32",
        "ms": seconds * 1000,
        "gflop": flops / 1e9,
        "tflops": flops / seconds / 1e12,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,default", help="comma list of: tiny, default")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default: 10 tiny, 2 default)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls first (default: 2 tiny, 1 default)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size not in MODEL_FILES:
            parser.error(f"unknown size {size!r}")
        iters = args.iters or (10 if size == "tiny" else 2)
        warmup = args.warmup if args.warmup is not None else (2 if size == "tiny" else 1)
        rows += bench_size(size, device, args.batch, iters, warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.markdown:
        print("| size | call | input | precision | ms/call | GFLOP/call | TFLOP/s |")
        print("|---|---|---|---|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['size']} | {r['what']} | {r['input']} | {r['precision']} | {r['ms']:.1f} | "
                f"{r['gflop']:.4g} | {r['tflops']:.3g} |"
            )
    else:
        for r in rows:
            print(
                f"{r['size']:8} {r['what']:22} {r['input']:14} {r['precision']:5} {r['ms']:10.1f} ms "
                f"{r['gflop']:10.4g} GFLOP {r['tflops']:8.3g} TFLOP/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
