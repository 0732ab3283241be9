"""The absurd jobs of issue 25 against a real ``engine serve`` under an address-space limit: what each gets.

    python scripts/absurd_jobs.py [--models tiny] [--address-space-gib 8] [--wait 20]

Starts the engine with ``RLIMIT_AS`` set (so a job that grows without bound fails there instead of taking
the machine down), sends each job with the engine's own client and a valid token, and prints a table: the
job, what came back (error code and message, or "accepted, still running after N s": then it is
cancelled) and the seconds until the answer. The engine must still be alive at the end.
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bridge import errors  # noqa: E402
from bridge.client import EngineClient, EngineProcess  # noqa: E402

QUICK = {"prompt": "", "timestep_respacing": "10", "skip_timesteps": 8, "batch_size": 1, "iterations_num": 1}


class LimitedEngineProcess(EngineProcess):
    """``engine serve`` with an address-space limit set in the child before it starts Python's work."""

    def __init__(self, *args: Any, address_space: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address_space = address_space

    def command(self) -> List[str]:
        cmd = super().command()
        boot = (
            "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({self.address_space}, {self.address_space})); "
            "sys.argv = ['engine'] + sys.argv[1:]; runpy.run_module('engine', run_name='__main__')"
        )
        return [cmd[0], "-c", boot] + cmd[3:]  # cmd = [python, -m, engine, serve, ...]


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(width: int, height: int) -> bytes:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def jobs() -> List[Tuple[str, Callable[[EngineClient, threading.Event], Any]]]:
    image, mask = png(80, 60), mask_png(80, 60)
    small = png(40, 40)

    def edit(**params: Any) -> Callable[[EngineClient, threading.Event], Any]:
        return lambda client, cancel: client.edit({**QUICK, **params}, image, mask, cancel=cancel)

    def extend(**params: Any) -> Callable[[EngineClient, threading.Event], Any]:
        return lambda client, cancel: client.extend({**QUICK, **params}, small, cancel=cancel)

    def huge_png(client: EngineClient, cancel: threading.Event) -> Any:
        big = png(30000, 20000)
        return client.edit(QUICK, big, big, cancel=cancel)

    return [
        ("`batch_size` 1e9", edit(batch_size=10**9)),
        ("`aug_num` 1e6", edit(prompt="a red ball", aug_num=10**6)),
        ("`iterations_num` 1e6", edit(iterations_num=10**6)),
        ("a 1 MB prompt", edit(prompt="a red ball " * 95000)),
        ("extend a 40 px image by 1,000,000 px on the left", extend(left=1_000_000)),
        ("extend by 60,000 px on every side", extend(left=60000, right=60000, top=60000, bottom=60000)),
        ("a 30000x20000 PNG", huge_png),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--address-space-gib", type=float, default=8.0)
    parser.add_argument(
        "--wait", type=float, default=20.0, help="seconds before an accepted job is cancelled"
    )
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        process = LimitedEngineProcess(
            sys.executable,
            str(REPO_ROOT),
            models=args.models,
            device="cpu",
            extra_env={"BLENDED_DIFFUSION_STEP_TIMES": str(Path(tmp) / "step_times.json")},
            log_path=str(Path(tmp) / "engine.log"),
            address_space=int(args.address_space_gib * 2**30),
        )
        host, port, token = process.start(timeout=240)
        print(f"| job | what happened ({args.models}, {args.address_space_gib:g} GiB address space) |")
        print("|---|---|")
        try:
            for name, run in jobs():
                cancel = threading.Event()
                outcome: Dict[str, str] = {}
                started = time.monotonic()

                def target(
                    run: Any = run, cancel: threading.Event = cancel, outcome: Dict = outcome, started=started
                ) -> None:
                    try:
                        with EngineClient(host, port, token, timeout=60.0) as client:
                            run(client, cancel)
                        outcome["what"] = "ran to the end"
                    except errors.JobCancelled:
                        outcome["what"] = f"accepted, still running after {args.wait:g} s (cancelled)"
                    except errors.BridgeError as exc:
                        outcome["what"] = f"`{exc.code}`: {exc.message[:200]}"
                    outcome["seconds"] = f"{time.monotonic() - started:.1f}"

                thread = threading.Thread(target=target, daemon=True)
                thread.start()
                thread.join(args.wait)
                if thread.is_alive():
                    cancel.set()
                    thread.join(120)
                seconds = outcome.get("seconds", "?")
                print(f"| {name} | {outcome.get('what', 'no answer')} (after {seconds} s) |", flush=True)
                if not process.alive():
                    print("| (the engine) | EXITED |")
                    return 1
        finally:
            alive = process.alive()
            process.stop()
        print(f"\nthe engine was {'alive' if alive else 'DEAD'} at the end")
        return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
