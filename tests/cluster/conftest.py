"""The cluster tests: a real ``python -m engine serve --ray local --ray-workers 2`` on the ``tiny`` models.

They run only inside a network namespace that has nothing but loopback (tests/test_cluster.py starts them
there with ``unshare -n``; BD_LOOPBACK_NETNS=1 says so): Ray binds the machine's own address otherwise,
and no test traffic may leave loopback. Collected anywhere else, they are left out (and
tests/test_cluster.py fails if they did not all run and pass there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.bridge.helpers import TOKEN

ROOT = Path(__file__).resolve().parents[2]
IN_NETNS = os.environ.get("BD_LOOPBACK_NETNS") == "1"

if not IN_NETNS:
    collect_ignore_glob = ["test_*.py"]


def _interfaces() -> list:
    return sorted(name for _, name in socket.if_nameindex())


@pytest.fixture(scope="session", autouse=True)
def only_loopback() -> None:
    """Refuse to start Ray where the namespace has any interface but loopback (the variable alone could be
    set by hand, or the files named on a command line that bypasses the collection filter)."""
    found = _interfaces()
    if found != ["lo"]:
        pytest.exit(
            f"cluster tests need a loopback-only network namespace (run tests/test_cluster.py); "
            f"this one has {found}",
            returncode=3,
        )


@pytest.fixture(scope="session")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    base = tmp_path_factory.mktemp("cluster")
    ray_tmp = tempfile.mkdtemp(prefix="bdray")  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ)
    env.update(
        BLENDED_DIFFUSION_TOKEN=TOKEN,
        BLENDED_DIFFUSION_WEIGHTS=str(base / "weights"),
        BLENDED_DIFFUSION_STEP_TIMES=str(base / "step_times.json"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        RAY_TMPDIR=ray_tmp,  # Ray's session files go with the test's, not into /tmp/ray
        HOME=str(base / "home"),  # Ray keeps its cluster token in ~/.ray: the test's own, not the user's
    )
    (base / "home").mkdir()
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server stops its workers and the head it started), then the whole process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of this server's Ray still there: its own group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(10)


@pytest.fixture(scope="session")
def cluster_server(
    cluster_env: Dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dict[str, Any]]:
    """The server's ready line (port, pid) and its log path; stopped, with its Ray, whatever happens."""
    # the tiny weights are generated on first load: once, here, not by two workers racing in one folder
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from engine.models.loading import load_models; "
            "load_models('tiny', sys.argv[1], 'cpu')",
            cluster_env["BLENDED_DIFFUSION_WEIGHTS"],
        ],
        cwd=ROOT,
        env=cluster_env,
        check=True,
        timeout=300,
    )
    log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--models",
        "tiny",
        "--ray",
        "local",
        "--ray-workers",
        "2",
        "--weights-dir",
        cluster_env["BLENDED_DIFFUSION_WEIGHTS"],
        "--log-file",
        str(log_path),
    ]
    stderr = open(log_path.with_suffix(".stderr"), "w")
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=cluster_env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, "the server did not start: " + log_path.with_suffix(".stderr").read_text()[-3000:]
        ready = json.loads(line)
        yield {"port": ready["port"], "pid": proc.pid, "log": log_path, "env": cluster_env}
    finally:
        _stop(proc)
        stderr.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
