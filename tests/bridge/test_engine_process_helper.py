"""EngineProcess against stand-in ``engine`` packages: start, ready line, failures, token handling, stop."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from bridge import errors
from bridge.client import TOKEN_ENV, EngineProcess

FAKE_MAIN = r"""
import json, os, signal, sys, time
mode = os.environ["FAKE_ENGINE_MODE"]
with open(os.environ["FAKE_ENGINE_RECORD"], "w") as f:
    json.dump({"argv": sys.argv, "cwd": os.getcwd(), "token": os.environ.get("BLENDED_DIFFUSION_TOKEN"),
               "pythonpath": os.environ.get("PYTHONPATH", "")}, f)
if mode == "crash":
    print("loading models...", file=sys.stderr)
    print("error: the weights of preset 'tiny' are missing", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "silent":
    time.sleep(60)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("some library chatter on stdout", flush=True)
print(json.dumps({"port": 4321, "pid": os.getpid(), "host": "127.0.0.1"}), flush=True)
if mode == "stubborn":
    while True:
        time.sleep(0.1)
sys.stdin.read()  # like --exit-on-stdin-eof
"""


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    package = tmp_path / "engine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_MAIN)
    return tmp_path


def fake_process(root: Path, mode: str) -> EngineProcess:
    env = {"FAKE_ENGINE_MODE": mode, "FAKE_ENGINE_RECORD": str(root / "record.json")}
    return EngineProcess(sys.executable, str(root), models="tiny", device="cpu", extra_env=env)


def test_start_reads_the_ready_line_and_passes_the_token_in_the_environment(fake_root):
    process = fake_process(fake_root, "ready")
    host, port, token = process.start(timeout=30)
    try:
        assert (host, port) == ("127.0.0.1", 4321)
        assert process.alive()
        record = json.loads((fake_root / "record.json").read_text())
        assert record["token"] == token and len(token) >= 32
        assert not any(token in arg for arg in record["argv"])
        assert record["argv"][1:] == [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--models",
            "tiny",
            "--exit-on-stdin-eof",
            "--device",
            "cpu",
        ]
        assert Path(record["cwd"]).resolve() == fake_root.resolve()
        assert record["pythonpath"].split(os.pathsep)[0] == str(fake_root)
        assert "some library chatter" in process.stderr_tail()
        assert TOKEN_ENV not in os.environ
        started = time.monotonic()
    finally:
        process.stop()
    assert time.monotonic() - started < 4.5  # closing stdin was enough, no terminate timeout
    assert not process.alive()


def test_each_start_gets_a_fresh_token(fake_root):
    tokens = []
    for _ in range(2):
        process = fake_process(fake_root, "ready")
        tokens.append(process.start(timeout=30)[2])
        process.stop()
    assert tokens[0] != tokens[1]


def test_engine_that_exits_reports_its_stderr(fake_root):
    process = fake_process(fake_root, "crash")
    with pytest.raises(errors.EngineStartError) as info:
        process.start(timeout=30)
    message = str(info.value)
    assert "exited with code 3" in message
    assert "the weights of preset 'tiny' are missing" in message
    assert not process.alive()


def test_engine_that_never_gets_ready_times_out_and_is_stopped(fake_root):
    process = fake_process(fake_root, "silent")
    with pytest.raises(errors.EngineStartError) as info:
        process.start(timeout=1.0)
    assert "did not report ready within 1 s" in str(info.value)
    assert not process.alive()


def test_stop_kills_an_engine_that_ignores_terminate(fake_root):
    process = fake_process(fake_root, "stubborn")
    process.start(timeout=30)
    pid = process.pid
    process.stop(timeout=0.5)
    assert not process.alive()
    with pytest.raises(OSError):
        os.kill(pid, 0)  # gone (and reaped)


def test_missing_python_is_a_start_error(fake_root):
    process = EngineProcess(str(fake_root / "no-such-python"), str(fake_root))
    with pytest.raises(errors.EngineStartError):
        process.start(timeout=5)
