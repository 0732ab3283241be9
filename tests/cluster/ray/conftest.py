"""The Ray tests: real ``python -m engine serve --ray`` servers, on the ``tiny`` and ``toy-latent`` models.

They run only inside a network namespace that has nothing but loopback
(tests/cluster/test_ray_in_loopback_namespace.py starts them there with ``unshare -n``; BD_LOOPBACK_NETNS=1
says so): Ray binds the machine's own address otherwise, and no test traffic may leave loopback. Collected
anywhere else, they are left out (and that launcher fails if they did not all run and pass there).

One Ray cluster (a head started once, :func:`ray_head`) serves the whole session: the shared ``tiny``
server and the ``toy-latent`` server connect to it. The fault tests kill workers and a head: they have a
server of their own, with its own head (``--ray local``), and never disturb the shared one.
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
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.bridge.helpers import TOKEN
from tests.cluster.processes import wait_for

ROOT = Path(__file__).resolve().parents[3]
IN_NETNS = os.environ.get("BD_LOOPBACK_NETNS") == "1"
HEAD_CPUS = 4  # two servers of 2 CPU workers each on the shared head

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
            "cluster tests need a loopback-only network namespace (run "
            f"tests/cluster/test_ray_in_loopback_namespace.py); this one has {found}",
            returncode=3,
        )


def _ray_env(base: Path) -> Dict[str, str]:
    """The environment of a Ray process of these tests: its own session files, cluster token and weights."""
    env = dict(os.environ)
    env.update(
        BLENDED_DIFFUSION_TOKEN=TOKEN,
        BLENDED_DIFFUSION_WEIGHTS=str(base / "weights"),
        BLENDED_DIFFUSION_STEP_TIMES=str(base / "step_times.json"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        # short: Ray's socket paths must fit in 107 bytes; its session files go with the test's, not /tmp/ray
        RAY_TMPDIR=tempfile.mkdtemp(prefix="bdray"),
        HOME=str(base / "home"),  # Ray keeps its cluster token in ~/.ray: the test's own, not the user's
    )
    (base / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="session")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    env = _ray_env(tmp_path_factory.mktemp("cluster"))
    yield env
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (a server stops its workers and the head it started), then the whole process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of this process's Ray still there: its own group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def ray_head(cluster_env: Dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Ray head on loopback (``ray start --head --block``, in its own process group so that
    it and its daemons stop together): its GCS address."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("ray-head") / "ray-start.log", "w")
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={HEAD_CPUS}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    proc = subprocess.Popen(
        command, env=cluster_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(address) or proc.poll() is not None, 120, "the Ray head")
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        yield address
    finally:
        _stop(proc)
        log.close()


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def tiny_weights(cluster_env: Dict[str, str]) -> str:
    """The tiny weights, generated on first load: once, here, not by two workers racing in one folder."""
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
    return cluster_env["BLENDED_DIFFUSION_WEIGHTS"]


class Server:
    """A ``serve --ray`` server, started at once; :meth:`ready` waits for its ready line and gives its port,
    pid, log path and environment; :meth:`stop` stops it with its Ray whatever happened."""

    def __init__(self, env: Dict[str, str], log_dir: Path, models: str, ray: str, workers: int = 2) -> None:
        self.env, self.log = env, log_dir / "serve.log"
        command = [sys.executable, "-m", "engine", "serve", "--models", models, "--ray", ray]
        command += ["--ray-workers", str(workers), "--weights-dir", env["BLENDED_DIFFUSION_WEIGHTS"]]
        self.stderr = open(self.log.with_suffix(".stderr"), "w")
        self.proc = subprocess.Popen(
            [*command, "--log-file", str(self.log)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
        )
        self.info: Dict[str, Any] = {}

    def ready(self) -> Dict[str, Any]:
        if not self.info:
            line = self.proc.stdout.readline()
            assert line, "the server did not start: " + self.log.with_suffix(".stderr").read_text()[-3000:]
            port = json.loads(line)["port"]
            self.info = {"port": port, "pid": self.proc.pid, "log": self.log, "env": self.env}
        return self.info

    def stop(self) -> None:
        _stop(self.proc)
        self.stderr.close()


@pytest.fixture(scope="session")
def servers(
    cluster_env: Dict[str, str], ray_head: str, tiny_weights: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dict[str, Server]]:
    """The session's three servers, started together (their start-ups overlap; the first test that needs
    one waits for it alone):

    - ``shared``: tiny, on the session's head; no test kills its workers or its head;
    - ``latent``: toy-latent (shipped in resources/models/), on the session's head;
    - ``faults``: tiny, ``--ray local``: a head of its own (and its own Ray session folder), its workers and
      head the fault tests' to kill.
    """
    fault_env = _ray_env(tmp_path_factory.mktemp("faults"))
    fault_env["BLENDED_DIFFUSION_WEIGHTS"] = tiny_weights
    started: Dict[str, Server] = {}
    try:
        started["shared"] = Server(cluster_env, tmp_path_factory.mktemp("serve-shared"), "tiny", ray_head)
        started["latent"] = Server(
            cluster_env, tmp_path_factory.mktemp("serve-latent"), "toy-latent", ray_head
        )
        started["faults"] = Server(fault_env, Path(fault_env["HOME"]).parent, "tiny", "local")
        yield started
    finally:
        for server in started.values():
            server.stop()
        shutil.rmtree(fault_env["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_server(servers: Dict[str, Server]) -> Dict[str, Any]:
    return servers["shared"].ready()


@pytest.fixture(scope="session")
def latent_server(servers: Dict[str, Server]) -> Dict[str, Any]:
    return servers["latent"].ready()


@pytest.fixture(scope="session")
def fault_server(servers: Dict[str, Server]) -> Dict[str, Any]:
    return servers["faults"].ready()


@pytest.fixture(scope="session")
def reference(tiny_weights: str) -> Any:
    """One engine on the tiny models in this process: ``reference(params)`` -> {seed: (rank, PNG)}."""
    from tests.cluster.ray.edits import one_engine

    return one_engine("tiny", tiny_weights)


@pytest.fixture(scope="session")
def latent_reference(tiny_weights: str) -> Any:
    """One engine on the toy-latent preset in this process (its weights ship in resources/models/)."""
    from tests.cluster.ray.edits import one_engine

    return one_engine("toy-latent", tiny_weights)
