"""Bounded work, end to end: a real ``engine serve --models tiny`` under an address-space limit gets the
issue's absurd jobs and random, extreme ones (hypothesis); each is refused at once with a message naming
the parameter and its limit, or runs (cancelled as soon as it starts); the engine never exits and its
resident memory stays within RSS_BOUND. Also: one connection holds at most its share of the queue."""

from __future__ import annotations

import functools
import io
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bridge import errors
from bridge.client import EngineClient, EngineProcess
from bridge.limits import DEFAULT_LIMITS
from tests.bridge.helpers import make_png, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE = 5 << 30  # the engine's RLIMIT_AS: a job that grows without bound fails there, not the machine
RSS_BOUND = 2 << 30  # what the tiny engine may hold resident at its peak, whatever it was sent
QUICK = {"timestep_respacing": "10", "skip_timesteps": 8, "batch_size": 1, "iterations_num": 1}
SIDES = ("left", "right", "top", "bottom")


class LimitedEngineProcess(EngineProcess):
    """``engine serve`` with RLIMIT_AS set in the child before the engine's code runs."""

    def command(self) -> List[str]:
        cmd = super().command()  # [python, -m, engine, serve, ...]
        boot = (
            "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE})); "
            "sys.argv = ['engine'] + sys.argv[1:]; runpy.run_module('engine', run_name='__main__')"
        )
        return [cmd[0], "-c", boot] + cmd[3:]


class Engine:
    def __init__(self, process: EngineProcess, host: str, port: int, token: str) -> None:
        self.process, self.host, self.port, self.token = process, host, port, token

    def client(self) -> EngineClient:
        return EngineClient(self.host, self.port, self.token, timeout=60.0)

    def memory(self, field: str) -> int:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(field)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("limited-engine")
    process = LimitedEngineProcess(
        sys.executable,
        str(REPO_ROOT),
        models="tiny",
        device="cpu",
        extra_env={
            "BLENDED_DIFFUSION_WEIGHTS": str(tmp / "weights"),
            "BLENDED_DIFFUSION_STEP_TIMES": str(tmp / "step_times.json"),
            "OMP_NUM_THREADS": "1",
        },
        log_path=str(tmp / "engine.log"),
    )
    host, port, token = process.start(timeout=240)
    try:
        yield Engine(process, host, port, token)
    finally:
        alive = process.alive()
        process.stop()
    assert alive, "the engine exited during the tests"


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 200).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)  # made once, by whichever test asks first
def huge_png() -> bytes:
    """17000 x 17000 grey (289 Mpx, over the pixel limit) in a few hundred kB."""
    return make_png(17000, 17000, channels=1, fill=0, level=9)


def send(engine: Engine, kind: str, params: Dict[str, Any], image: bytes, mask: Optional[bytes]) -> Tuple:
    """("refused", code, message) | ("ran", None, "") | ("cancelled", None, ""): a job that starts is
    cancelled at its first report of running."""
    cancel = threading.Event()

    def on_progress(info: Dict[str, Any], _png: Any) -> None:
        if info.get("state") == "running":
            cancel.set()

    with engine.client() as client:
        try:
            if kind == "edit":
                client.edit(params, image, mask, on_progress=on_progress, cancel=cancel)  # type: ignore[arg-type]
            else:
                client.extend(params, image, on_progress=on_progress, cancel=cancel)
        except errors.JobCancelled:
            return ("cancelled", None, "")
        except errors.EngineJobError as exc:
            return ("refused", exc.code, exc.message)
    return ("ran", None, "")


# what a refusal names: a parameter (or the canvas / windows / image an extension or a request makes)
NAMES = (
    "batch_size", "iterations_num", "aug_num", "prune_factor", "skip_timesteps", "timestep_respacing",
    "prompt", "preview_every", "seed", "window", "blend_band", "canvas", "extend",
    *SIDES,
)  # fmt: skip


def assert_refused_with_reason(outcome: Tuple) -> None:
    """invalid_input naming the parameter (and its limit, when one was passed), or too_large with the
    figures (an image over the pixel limit, a job that does not fit this engine's memory)."""
    state, code, message = outcome
    assert state == "refused", outcome
    if code == errors.INVALID_INPUT:
        assert any(name in message for name in NAMES), outcome
        if "limit" in message:
            assert re.search(r"limit of [\d.]+", message), outcome
    else:
        assert code == errors.TOO_LARGE, outcome
        assert "needs about" in message or "exceed the limit" in message, outcome


IMAGE, MASK = png(80, 60), png(80, 60, "L")
SMALL = png(40, 40)
ABSURD = [
    ("edit", {"batch_size": 10**9}, "batch_size 1000000000 is over the limit of 16"),
    ("edit", {"prompt": "a red ball", "aug_num": 10**6}, "aug_num 1000000 is over the limit of 128"),
    ("edit", {"iterations_num": 10**6}, "1000000 candidates is over the limit of 64"),
    # an option of earlier versions (issue 36) is refused by name, not ignored
    ("edit", {"prompt": "a red ball", "prune_factor": 10**6}, "edit parameter 'prune_factor' was removed"),
    ("edit", {"prompt": "a red ball " * 95000}, "characters, over the limit of 1000"),
    ("extend", {"left": 1_000_000}, "left 1000000 px is over the limit of 16384 px"),
    ("extend", {side: 60000 for side in SIDES}, "left 60000 px is over the limit of 16384 px"),
]


@pytest.mark.parametrize("kind, params, message", ABSURD)
def test_the_issues_absurd_jobs_are_refused_at_once(engine, kind, params, message):
    started = time.monotonic()
    outcome = send(engine, kind, {**QUICK, **params}, IMAGE if kind == "edit" else SMALL, MASK)
    assert outcome[:2] == ("refused", errors.INVALID_INPUT) and message in outcome[2], outcome
    assert time.monotonic() - started < 10  # "at once": nothing was planned or allocated (a loose bound)
    assert engine.process.alive()


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(engine):
    outcome = send(engine, "edit", QUICK, huge_png(), huge_png())
    assert outcome[:2] == ("refused", errors.TOO_LARGE) and "17000x17000" in outcome[2], outcome


def test_status_reports_the_limits(engine):
    with engine.client() as client:
        limits = client.status()["limits"]
    assert limits == DEFAULT_LIMITS.to_status()


def _ints(low: int, high: int) -> Any:
    """Mostly valid values, sometimes just over the limit, sometimes absurd."""
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([high + 1, 10**6, 10**12, -1, 0]),
        st.integers(-(2**40), 2**40),
    )


PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "batch_size": _ints(1, DEFAULT_LIMITS.max_batch_size),
        "iterations_num": _ints(1, 8),
        "aug_num": _ints(1, DEFAULT_LIMITS.max_aug_num),
        "skip_timesteps": _ints(0, 12),
        "timestep_respacing": st.sampled_from(["4", "10", "ddim8", "1000", "1001", "10**9", "1," * 150, "x"]),
        "prompt": st.sampled_from(["", "a red ball", "ball " * 80, "x" * 1001, "y" * 100_000]),
        "preview_every": _ints(0, 4),
        "seed": st.one_of(st.none(), _ints(0, 2**31)),
    },
)
EXTENSION = st.fixed_dictionaries(
    {side: st.sampled_from([0, 0, 8, 100, 5000, 16384, 16385, 10**6]) for side in SIDES},
    optional={"window": st.sampled_from([0, 8, 64, 5000]), "blend_band": st.sampled_from([0, 4, 2000])},
)
IMAGES = st.sampled_from(["small", "wide", "one", "huge"])


def test_random_and_extreme_jobs_are_refused_with_a_reason_or_run(engine):
    """Each random job is refused with its reason or runs, the engine alive and small after it; and the jobs
    included both sides: some passed and ran, some were refused."""
    seen: Dict[str, int] = {}  # outcomes by kind, this test's own

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(kind=st.sampled_from(["edit", "extend"]), params=PARAMS, extension=EXTENSION, which=IMAGES)
    def one_job(kind, params, extension, which):
        image = {"small": IMAGE, "wide": png(3000, 2), "one": png(1, 1), "huge": None}[which]
        image = huge_png() if image is None else image
        mask = image if which in ("huge",) else png(*Image.open(io.BytesIO(image)).size, "L")
        request = {**params, **extension} if kind == "extend" else params
        outcome = send(engine, kind, request, image, mask)
        key = outcome[0] if outcome[0] != "refused" else outcome[1]
        seen[key] = seen.get(key, 0) + 1
        if outcome[0] == "refused":
            assert_refused_with_reason(outcome)
        assert engine.process.alive()
        assert engine.memory("VmHWM") < RSS_BOUND, engine.memory("VmHWM")

    one_job()
    assert seen.get("cancelled", 0) + seen.get("ran", 0) > 0 and seen.get(errors.INVALID_INPUT, 0) > 0, seen
    peak = engine.memory("VmHWM") / 2**20
    print("random job outcomes:", seen, f"engine peak resident size {peak:.0f} MiB")


def test_one_connection_cannot_hold_more_than_its_share_of_the_queue(engine):
    limit = DEFAULT_LIMITS.max_jobs_per_connection
    long_job = {"timestep_respacing": "1000", "skip_timesteps": 0, "batch_size": 1, "iterations_num": 1}
    threads, outcomes = [], []
    cancel = threading.Event()

    def submit(client: EngineClient) -> None:
        try:
            client.edit(long_job, IMAGE, MASK, cancel=cancel)
            outcomes.append("ran")
        except errors.JobCancelled:
            outcomes.append("cancelled")
        except errors.EngineJobError as exc:
            outcomes.append(exc.code + ": " + exc.message)

    clients = [engine.client() for _ in range(limit + 1)]  # one client per job: EngineClient runs one at once
    greedy = [RawJobs(engine) for _ in range(1)]
    try:
        refused = greedy[0].submit_many(limit + 1)
        assert refused == [f"this connection has {limit} jobs queued or running"], refused
        # another client still gets its place in the queue
        thread = threading.Thread(target=submit, args=(clients[0],), daemon=True)
        thread.start()
        threads.append(thread)
        wait_until(lambda: _queue_length(engine) == limit + 1, 30, "the other client's job queued")
    finally:
        cancel.set()
        greedy[0].close()
        for thread in threads:
            thread.join(30)
        for client in clients:
            client.close()
    assert outcomes == ["cancelled"], outcomes


def _queue_length(engine: Engine) -> int:
    with engine.client() as client:
        return int(client.status()["queue"]["length"])


class RawJobs:
    """One raw connection sending several edit requests without waiting (EngineClient sends one at once)."""

    def __init__(self, engine: Engine) -> None:
        from tests.bridge.helpers import RawConnection

        self.conn = RawConnection(engine.port, engine.host, timeout=30.0)
        assert self.conn.hello(engine.token).type == "welcome"

    def submit_many(self, count: int) -> List[str]:
        """Send ``count`` long jobs; the refusals' messages (their start), in order."""
        params = {"timestep_respacing": "1000", "skip_timesteps": 0, "batch_size": 1, "iterations_num": 1}
        for index in range(count):
            self.conn.send("edit", {"id": index, "params": params}, [("image", IMAGE), ("mask", MASK)])
        refused = []
        answered = 0
        while answered < count:
            message = self.conn.recv()
            if message.type == "accepted":
                answered += 1
            elif message.type == "error" and message.get("re") is not None:
                answered += 1
                assert message.get("code") == errors.QUEUE_FULL, message.get("message")
                refused.append(message.get("message").split(", the limit")[0])
        return refused

    def close(self) -> None:
        self.conn.close()


def test_serve_refuses_limits_above_the_built_in_ones_before_loading():
    import os
    import subprocess

    env = {**os.environ, "BLENDED_DIFFUSION_TOKEN": "x" * 32, "PYTHONPATH": str(REPO_ROOT)}
    for option, value, message in (
        ("--max-candidates", "65", "--max-candidates: max_candidates must be between 1 and 64, not 65"),
        ("--max-megapixels", "0", "--max-megapixels: max_image_pixels must be between 1 and 268435456"),
        ("--max-job-seconds", "-5", "--max-job-seconds: max_job_seconds must be positive, not -5.0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "engine", "serve", "--models", "tiny", option, value],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr and done.stdout == "", done.stderr
