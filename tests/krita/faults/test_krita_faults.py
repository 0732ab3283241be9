"""Faults around a running edit, in real Krita (kritarunner, offscreen, throw-away HOME): Krita killed or
closed during a job must not leave the local engine running, and a document closed during a job drops
the result with a message. faults/scenarios.py stages them inside Krita; the engine is the real one
(tiny preset), started by the plugin's EngineManager as the docker starts it."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.krita_env import HOST_KRITA, KRITARUNNER, scenario_environment, seed_resources

ENGINE_EXIT_LIMIT = 10.0  # the bound: the local engine is gone 10 s after Krita

pytestmark = pytest.mark.skipif(
    KRITARUNNER is None, reason="kritarunner is not installed (apt-get install krita python3-pyqt5)"
)


@pytest.fixture
def fault_env(tmp_path):
    env = scenario_environment(tmp_path, "tiny")
    return env, tmp_path


@pytest.fixture
def started():
    """Every kritarunner a test starts is killed at the end, whatever happened."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def start(fault_env, started, scenario: str):
    env, home = fault_env
    seed_resources(HOST_KRITA, home)
    result = home / f"{scenario}.json"
    log = open(home / f"{scenario}.log", "wb")
    proc = subprocess.Popen(
        [KRITARUNNER, "-s", "tests.krita.faults.scenarios", str(result), scenario],
        env=env,
        cwd=str(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    started.append(proc)
    return proc, result


def wait_for_file(proc, path: Path, limit: float = 400.0) -> dict:
    deadline = time.time() + limit
    error = Path(str(path) + ".error")
    while time.time() < deadline and not path.exists() and not error.exists() and proc.poll() is None:
        time.sleep(0.2)
    if error.exists():
        pytest.fail(json.loads(error.read_text())["traceback"])
    if not path.exists():
        proc.kill()
        log = path.with_suffix(".log")
        pytest.fail(f"the scenario wrote nothing (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
    return json.loads(path.read_text())


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (it has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def seconds_until_gone(pid: int, limit: float) -> float:
    started = time.time()
    while time.time() - started < limit:
        if gone(pid):
            return time.time() - started
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)  # leave nothing behind, then fail
    except OSError:
        pass
    return float("inf")


def test_krita_killed_during_a_job_stops_the_engine(fault_env, started):
    proc, result = start(fault_env, started, "job_then_wait")
    pids = wait_for_file(proc, result)
    assert pids["krita"] == proc.pid and not gone(pids["engine"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert seconds_until_gone(pids["engine"], ENGINE_EXIT_LIMIT) <= ENGINE_EXIT_LIMIT, (
        "the engine outlived a killed Krita"
    )


def test_krita_closed_during_a_job_stops_the_engine(fault_env, started):
    proc, result = start(fault_env, started, "job_then_quit")
    pids = wait_for_file(proc, result)
    assert pids["busy"], "the job was still running when Krita quit"
    assert not pids["worker_left"] and not pids["engine_running"], pids
    assert pids["worker_released"], "the worker thread ended before Krita exits"
    proc.wait(60)  # kritarunner's own exit code is not checked: it ends with SIGSEGV here (docs/plugin.md)
    log = result.with_suffix(".log").read_text(errors="replace")
    assert seconds_until_gone(pids["engine"], ENGINE_EXIT_LIMIT) <= ENGINE_EXIT_LIMIT, (
        "the engine outlived Krita's orderly exit"
    )
    assert "Traceback" not in log, log[-3000:]


def test_document_closed_during_a_job_drops_the_result(fault_env, started):
    proc, result = start(fault_env, started, "doc_closed")
    r = wait_for_file(proc, result, 200)
    proc.wait(60)
    assert r["started"] and r["busy_when_closed"] and r["finished"]
    assert r["documents_closed"] == 1
    assert r["outcome"] is False and r["state"] == "ready" and r["can_edit_again"]
    assert "document was closed" in r["message"] and "dropped" in r["message"]
    assert r["dialogs"] == [], "closing the document on purpose is answered in the docker, not a dialog"
    assert r["exceptions"] == []
    log = result.with_suffix(".log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
