"""Round trip of a large RGBA image through the bridge on loopback: encode, send, decode, and back.

    PYTHONPATH=. .venv/bin/python bench/bridge_bench.py [--size 4096] [--levels 0,1] [--repeat 3]
                                                        [--content photo|noise] [--pillow] [--write FILE]

One round trip, as the plugin and the engine do it:
  client: encode the RGBA pixels as PNG (bridge.png, the way the plugin can from Krita's pixel bytes)
  -> send it with a mask through EngineClient.edit to a bridge server in another process
  -> server: decode it with Pillow (as the engine does), encode it again (bridge.png, as the engine encodes
     result patches), send it back as the result candidate
  -> client: decode the PNG (bridge.png) and check the pixels are the ones it sent.
The server's job runner is an echo instead of the diffusion, so only the bridge is measured.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.client import TOKEN_ENV, EngineClient  # noqa: E402
from bridge.png import decode_png, encode_png  # noqa: E402


def serve() -> int:
    """The server side: a BridgeServer whose runner decodes and re-encodes the image."""
    from PIL import Image

    from bridge.jobqueue import Job, JobRunner
    from bridge.server import BridgeServer

    class EchoRunner(JobRunner):
        def run(self, job: Job) -> Any:
            started = time.perf_counter()
            image = Image.open(io.BytesIO(job.images["image"]))
            image.load()
            decoded = time.perf_counter()
            data = encode_png(image.width, image.height, image.mode, image.tobytes(), job.params["level"])
            encoded = time.perf_counter()
            candidate = {"rank": 1, "seed": 0, "scores": {}, "box": [0, 0, image.width, image.height]}
            timings = {"server_decode": decoded - started, "server_encode": encoded - decoded}
            fields = {"candidates": [dict(candidate, attachment="c0")], "box": candidate["box"], "notes": []}
            fields["timings"] = timings
            return fields, [("c0", data)]

    server = BridgeServer(EchoRunner(), os.environ[TOKEN_ENV])
    server.start()
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.close()
    return 0


def make_pixels(size: int, content: str) -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    if content == "noise":
        return rng.integers(0, 256, (size, size, 4), dtype=np.uint8).tobytes()
    # "photo": smooth colour fields with sensor-like noise and an opaque alpha, compresses like a photo
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * (4096.0 / size)
    rgb = np.stack(
        [128 + 100 * np.sin(x / 300), 128 + 100 * np.cos(y / 250), 128 + 60 * np.sin((x + y) / 400)], -1
    )
    rgb += rng.normal(0, 3, rgb.shape)
    alpha = np.full((size, size, 1), 255, np.float32)
    return np.clip(np.concatenate([rgb, alpha], -1), 0, 255).astype(np.uint8).tobytes()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = platform.python_version()
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({model}), no GPU, Python {python}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--levels", default="0,1", help="zlib levels to try, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--content", choices=["photo", "noise"], default="photo")
    parser.add_argument("--pillow", action="store_true", help="also time Pillow's PNG encoder once per level")
    parser.add_argument("--write", help="append the results as a Markdown section to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()

    size = args.size
    pixels = make_pixels(size, args.content)
    mask_png = encode_png(size, size, "L", b"\xff" * (size * size), 1)
    token = secrets.token_urlsafe(32)
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{TOKEN_ENV: token})
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    rows: List[Dict[str, Any]] = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        port = json.loads(server.stdout.readline())["port"]  # type: ignore[union-attr]
        client = EngineClient("127.0.0.1", port, token, timeout=120)
        for level in [int(v) for v in args.levels.split(",")]:
            runs: Dict[str, List[float]] = {}
            png_size = 0
            for _ in range(args.repeat):
                cpu0 = time.process_time() + process_cpu_seconds(server.pid)
                t0 = time.perf_counter()
                image_png = encode_png(size, size, "RGBA", pixels, level)
                t1 = time.perf_counter()
                result = client.edit({"level": level}, image_png, mask_png)
                t2 = time.perf_counter()
                width, height, mode, back = decode_png(result["candidates"][0]["png"])
                t3 = time.perf_counter()
                cpu = time.process_time() + process_cpu_seconds(server.pid) - cpu0
                assert (width, height, mode) == (size, size, "RGBA") and back == pixels, "pixels changed"
                png_size = len(image_png)
                timings = result.get("timings") or {}
                for key, value in (
                    ("client_encode", t1 - t0),
                    ("bridge_and_server", t2 - t1),
                    ("server_decode", timings.get("server_decode", 0.0)),
                    ("server_encode", timings.get("server_encode", 0.0)),
                    ("client_decode", t3 - t2),
                    ("round_trip", t3 - t0),
                    ("cpu", cpu),
                ):
                    runs.setdefault(key, []).append(value)
            row: Dict[str, Any] = {"level": level, "png_mb": png_size / 1e6}
            row.update({key: statistics.median(values) for key, values in runs.items()})
            row["transfer"] = row["bridge_and_server"] - row["server_decode"] - row["server_encode"]
            if args.pillow:
                from PIL import Image

                image = Image.frombytes("RGBA", (size, size), pixels)
                t0 = time.perf_counter()
                image.save(io.BytesIO(), format="PNG", compress_level=level)
                row["pillow_encode"] = time.perf_counter() - t0
            rows.append(row)
        client.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    header = (
        "| zlib level | PNG size | client encode | send + server + back | of which server decode / encode "
        "| client decode | **round trip** | CPU time, both processes |"
        + (" Pillow encode (for comparison) |" if args.pillow else "")
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        line = (
            f"| {row['level']} | {row['png_mb']:.1f} MB | {row['client_encode']:.2f} s "
            f"| {row['bridge_and_server']:.2f} s "
            f"| {row['server_decode']:.2f} s / {row['server_encode']:.2f} s "
            f"| {row['client_decode']:.2f} s | **{row['round_trip']:.2f} s** | {row['cpu']:.2f} s |"
        )
        if args.pillow:
            line += f" {row['pillow_encode']:.2f} s |"
        lines.append(line)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = "\n".join(
        [
            f"### {size}x{size} RGBA, {args.content} content, median of {args.repeat} ({when})",
            "",
            f"Machine: {machine()}; load average {load_before:.1f} before, {load_after:.1f} after.",
            "",
            *lines,
            "",
        ]
    )
    print(report)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
