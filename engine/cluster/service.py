"""``serve --ray``: connect to (or start) the Ray cluster, start the worker actors, and give the bridge
server the runners (validation, status) and the job queue that runs jobs on them.

Everything a user can get wrong (Ray missing, an address nobody answers, ``--ray-workers 0``, no GPU for
``--ray local``) is a :class:`ClusterError` with one line, raised before anything is started, or after
whatever was started is stopped again.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from bridge import errors
from bridge.jobqueue import Job, RunnerOutput
from engine.cluster.scheduler import ClusterQueue, WorkerPool
from engine.jobs import EditRunner, ExtendRunner

log = logging.getLogger("engine.cluster")

RAY_VERSION = "2.60.0"  # the version the tests run (requirements/dev.txt); install.py --cluster installs it
ENGINE_ROOT = str(Path(__file__).resolve().parents[2])
DEFAULT_GCS_PORT = 6379


class ClusterError(Exception):
    """A bad --ray setup: one line for the user, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run jobs on a Ray cluster: the head's HOST:PORT, 'auto' (the cluster this machine belongs "
        "to) or 'local' (start one on this machine, one worker per GPU); see docs/cluster.md",
    )
    parser.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: N CPU worker actors instead of one per GPU (CPU clusters, tests)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    if args.ray_workers is not None and not args.ray:
        raise ClusterError("--ray-workers needs --ray")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise ClusterError(f"--ray-workers must be at least 1, not {args.ray_workers}")


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, str(DEFAULT_GCS_PORT)
    try:
        number = int(port)
    except ValueError:
        raise ClusterError(f"--ray {address}: give the head's HOST:PORT, 'auto' or 'local'") from None
    try:
        socket.create_connection((host.strip("[]"), number), timeout=5.0).close()
    except OSError as exc:
        raise ClusterError(
            f"--ray {address}: nobody answers there ({exc}); start the head with 'ray start --head' "
            "(docs/cluster.md) or use --ray local"
        ) from None


@dataclass
class Cluster:
    queue: ClusterQueue
    runners: Dict[str, Any]
    models: Any  # a description of the workers' models (device, preset, image_size) for the status
    started_head: bool

    watch: Optional[HeadWatch] = None

    def shutdown(self) -> None:
        """Stop the workers, and the head when this server started it."""
        import ray

        if self.watch is not None:
            self.watch.stopping.set()

        def stop() -> None:
            for worker in list(self.queue.pool.workers):
                try:
                    ray.kill(worker.handle)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            ray.shutdown()

        # Ray calls can wait for a head that is gone: the server's exit must not
        stopper = threading.Thread(target=stop, name="ray-shutdown", daemon=True)
        stopper.start()
        stopper.join(60)


def _gcs_address() -> str:
    import ray

    return str(ray.get_runtime_context().gcs_address)


def _answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


class HeadWatch(threading.Thread):
    """Watches the Ray head (its GCS port). Gone: the queue fails every job with "cluster unavailable" and
    refuses new ones while the server keeps serving; back (or, for the head this server started, at once:
    a new one), the driver reconnects and the pool starts its workers again."""

    INTERVAL = 2.0

    def __init__(self, queue: ClusterQueue, init: Callable[[], None], address: str, local: bool) -> None:
        super().__init__(name="ray-head-watch", daemon=True)
        self.queue, self.init, self.address, self.local = queue, init, address, local
        self.gcs = _gcs_address()
        self.workers = len(queue.pool.workers)
        self.stopping = threading.Event()

    def problem(self) -> Optional[str]:
        if _answers(self.gcs):
            return None
        return (
            f"cluster unavailable: the Ray head at {self.gcs} does not answer; the engine reconnects when "
            "it is back"
        )

    def run(self) -> None:
        while not self.stopping.wait(self.INTERVAL):
            why = self.problem()
            if why is None:
                continue
            log.warning("%s", why)
            self.queue.cluster_lost(why)
            while not self.stopping.wait(self.INTERVAL):
                if not self.local and not _answers(self.address if ":" in self.address else self.gcs):
                    continue
                try:
                    self._reconnect()
                    break
                except Exception:  # noqa: BLE001 - not back yet: try again
                    log.warning("reconnecting to the cluster failed:\n%s", traceback.format_exc())

    def _reconnect(self) -> None:
        import ray

        stopper = threading.Thread(target=ray.shutdown, daemon=True)
        stopper.start()
        stopper.join(60)
        self.init()
        self.gcs = _gcs_address()
        self.queue.pool.start(self.workers)
        self.queue.cluster_back(self.queue.pool.workers)


class AdmitOnWorker:
    """Admission (engine.jobs' estimate of memory and time) belongs to the device that runs the job: a
    worker answers it; the rest of the validation runs here."""

    pool: Any = None  # the WorkerPool, set by _start_workers
    kind = "edit"

    def _admit(
        self,
        checked: Dict[str, Any],
        image_pixels: int,
        canvas_pixels: int = 0,
        windows: int = 1,
        detail: Tuple[int, int] = (0, 0),
    ) -> Dict[str, Any]:
        import ray

        workers = list(self.pool.workers)
        if not workers:
            raise errors.JobFailed(errors.ENGINE_ERROR, "no cluster worker is up to take the job")
        try:
            answer = ray.get(
                workers[0].handle.admit.remote(
                    self.kind, checked, image_pixels, canvas_pixels, windows, tuple(detail)
                ),
                timeout=60,
            )
        except Exception as exc:  # noqa: BLE001 - the worker or the head is gone
            raise errors.JobFailed(
                errors.ENGINE_ERROR, f"cluster unavailable: {type(exc).__name__}"
            ) from None
        if answer[0] != "ok":
            raise errors.JobFailed(answer[1], answer[2])
        return answer[1]


class ClusterExtendRunner(AdmitOnWorker, ExtendRunner):
    kind = "extend"


class ClusterEditRunner(AdmitOnWorker, EditRunner):
    """Validates edit requests and reports status like a single engine; the queue runs the jobs."""

    def __init__(self, cluster_status: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cluster_status = cluster_status

    def status(self) -> Dict[str, Any]:
        info = super().status()
        cluster = self._cluster_status()
        info["device"] = f"ray: {cluster['workers']} worker(s) on {', '.join(cluster['devices']) or '-'}"
        info["cluster"] = cluster
        return info

    def run(self, job: Job) -> RunnerOutput:
        raise errors.JobFailed(errors.INTERNAL_ERROR, "cluster jobs run on the workers")


def start_cluster(
    args: argparse.Namespace,
    limits: Any,
    edit_defaults: Dict[str, Any],
    log_file: Optional[str],
    job_limits: Any = None,
) -> Cluster:
    """Connect or start the cluster and the workers; ClusterError (nothing left running) when it fails."""
    # A Ray call after ray.shutdown() (a shard's thread while HeadWatch reconnects) must fail, not start a
    # cluster of its own: no automatic ray.init.
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    try:
        import ray
    except ImportError:
        raise ClusterError(
            f"--ray needs Ray: pip install 'ray=={RAY_VERSION}' into the engine's environment, or "
            "run install.py --cluster"
        ) from None
    workers = args.ray_workers
    gpus = 0
    if workers is None and args.ray == "local":
        import torch

        gpus = torch.cuda.device_count()
        if not gpus:
            raise ClusterError("--ray local found no GPU: give --ray-workers N for N CPU workers")
    if args.ray not in ("local", "auto"):
        _check_reachable(args.ray)
    # the workers import this checkout's engine; the token was taken out of the environment before
    python_path = os.pathsep.join(p for p in (ENGINE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": python_path}}
    started_head = args.ray == "local"
    # Ray ends a driver whose head stays unreachable for a minute; the bridge server must outlive the head
    # (HeadWatch reports it and reconnects), so the driver waits for it as long as it takes.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(10**8))

    def init() -> None:
        if started_head:
            ray.init(
                num_cpus=workers,  # None: all of this machine's
                num_gpus=gpus,
                include_dashboard=False,
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=args.ray, runtime_env=runtime_env, logging_level=logging.WARNING)

    try:
        init()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster is the user's to fix
        ray.shutdown()
        raise ClusterError(f"--ray {args.ray}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    try:
        cluster = _start_workers(
            args, ray, workers, limits, edit_defaults, log_file, started_head, job_limits
        )
        cluster.watch = HeadWatch(cluster.queue, init, args.ray, started_head)
        cluster.queue.head_problem = cluster.watch.problem
        cluster.watch.start()
        return cluster
    except ClusterError:
        ray.shutdown()
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the models fail to load on a worker
        ray.shutdown()
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        # Ray's message names the actor first and the worker's own error last
        raise ClusterError(f"--ray: the workers did not start: {lines[-1]}") from None


def _node_addresses(ray: Any) -> list:
    if not _answers(_gcs_address()):
        return []  # asking the head would wait for it
    try:
        return sorted({str(node["NodeManagerAddress"]) for node in ray.nodes() if node.get("Alive")})
    except Exception:  # noqa: BLE001 - a status reply must not fail for it
        return []


def _start_workers(
    args: argparse.Namespace,
    ray: Any,
    workers: Optional[int],
    limits: Any,
    edit_defaults: Dict[str, Any],
    log_file: Optional[str],
    started_head: bool,
    job_limits: Any = None,
) -> Cluster:
    from engine.cluster.worker import ShardWorker

    if workers is None:
        workers = int(ray.cluster_resources().get("GPU", 0))
        if workers < 1:
            raise ClusterError(f"--ray {args.ray}: the cluster has no GPU: give --ray-workers N")
        options: Dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
        device, threads = "cuda", 0
    else:
        options = {"num_cpus": 1}
        device, threads = "cpu", 1
    actor_class = ray.remote(max_concurrency=4, max_restarts=0, **options)(ShardWorker)
    weights_dir = args.weights_dir

    def make_actor() -> Any:
        # the limits are the server's own settings (bridge.limits.JobLimits), no client's data
        return actor_class.remote(args.models, weights_dir, device, threads, job_limits)

    pool = WorkerPool(make_actor)
    pool.start(workers)
    info = pool.workers[0].info
    queue = ClusterQueue(
        pool,
        diffusion_steps=int(info.get("diffusion_steps", 1000)),
        max_per_owner=getattr(job_limits, "max_jobs_per_connection", None),
    )

    def cluster_status() -> Dict[str, Any]:
        snapshot = queue.snapshot()
        live = list(pool.workers)
        return {
            "address": args.ray,
            "workers": len(live),
            "workers_free": snapshot["workers_free"],
            "workers_starting": snapshot["workers_starting"],
            "devices": sorted({str(w.info.get("device")) for w in live}),
            "nodes": sorted({str(w.info.get("node")) for w in live}),
            "node_addresses": _node_addresses(ray) if queue.unavailable is None else [],
            "worker_pids": [w.info.get("pid") for w in live],
            "cancels": dict(queue.cancels),
            "unavailable": queue.unavailable,
        }

    models = types.SimpleNamespace(
        device=info["device"],
        preset=info["preset"],
        image_size=info["image_size"],
        class_cond=info["class_cond"],
        method=info["method"],  # the status's method: "latent" for a latent preset's workers
        weights_dir=weights_dir,
    )
    runners = {
        "edit": ClusterEditRunner(
            cluster_status, models, limits, edit_defaults, log_file, args.models, job_limits
        ),
        "extend": ClusterExtendRunner(models, limits, edit_defaults, log_file, args.models, job_limits),
    }
    for runner in runners.values():
        runner.pool = pool
    log.info("ray cluster %s: %d worker(s) on %s", args.ray, len(pool.workers), info["device"])
    return Cluster(queue, runners, models, started_head)
