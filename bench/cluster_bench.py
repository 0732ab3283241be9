"""The engine on a local Ray cluster (``serve --ray local --ray-workers N``) against one plain engine, with
the shipped ``toy`` models on the CPU, through the real EngineClient:

- one job of 8 candidates on a plain engine, on 1 worker and on 2 workers: wall time, CPU time of all
  the server's processes, the speed-up of 2 workers over 1;
- the per-job overhead of the cluster: a 1-candidate, 1-step job on the plain engine and on 1 worker
  (dispatch, the image's trip to the worker and the result's back);
- 3 clients at once on 2 workers, 8 candidates each: each one's time to its first progress and its result;
- Ray's own resident memory on the idle cluster (its daemons, without the engine's processes), and the
  engine's (server + workers) growth over 40 jobs.

Runs only inside a loopback-only network namespace (Ray binds the machine's address otherwise):

    unshare -n sh -c 'ip link set lo up; OMP_NUM_THREADS=1 python bench/cluster_bench.py'

Prints a JSON report. CPU time is the sum over the server's process tree (server, Ray daemons, workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.client import EngineClient  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> Optional[List[str]]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def session_pids(sid: int) -> List[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and int(fields[3]) == sid:  # field 6 of stat: the session id
                pids.append(int(entry.name))
    return pids


def cpu_seconds(sid: int) -> float:
    """User + system time of the session's live processes and of the children they reaped."""
    total = 0
    for pid in session_pids(sid):
        fields = _proc_stat(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])
    return total / TICK


def rss_mib(pids: List[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Server:
    def __init__(self, workers: Optional[int], env: Dict[str, str], log_dir: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--models",
            "toy",
            "--device",
            "cpu",
            "--log-file",
            str(log_dir / f"serve-{workers}.log"),
        ]
        if workers:
            command += ["--ray", "local", "--ray-workers", str(workers)]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            stderr=open(log_dir / f"serve-{workers}.stderr", "w"),
            start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the server did not start: see {log_dir}")
        self.port = json.loads(line)["port"]
        self.start_seconds = time.monotonic() - started

    def client(self) -> EngineClient:
        return EngineClient("127.0.0.1", self.port, TOKEN, timeout=120)

    def engine_pids(self) -> List[int]:
        with self.client() as client:
            cluster = client.status().get("cluster")
        return [self.proc.pid] + (list(cluster["worker_pids"]) if cluster else [])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def image_and_mask() -> tuple:
    from tests.bridge.helpers import make_png

    return make_png(96, 96, 3, 110), make_png(96, 96, 1, 255)


def timed_job(server: Server, params: Dict[str, Any], repeats: int = 1) -> Dict[str, float]:
    image, mask = image_and_mask()
    walls, cpus = [], []
    with server.client() as client:
        for _ in range(repeats):
            cpu, wall = cpu_seconds(server.proc.pid), time.monotonic()
            client.edit(dict(params), image, mask)
            walls.append(time.monotonic() - wall)
            cpus.append(cpu_seconds(server.proc.pid) - cpu)
    return {"wall_s": round(min(walls), 3), "cpu_s": round(min(cpus), 3)}


def three_clients(server: Server, params: Dict[str, Any]) -> List[Dict[str, float]]:
    image, mask = image_and_mask()
    start = time.monotonic()
    results: List[Dict[str, float]] = [{} for _ in range(3)]

    def one(index: int) -> None:
        with server.client() as client:

            def on_progress(info: Dict[str, Any], _png: Any) -> None:
                if (
                    info["state"] == "running"
                    and info.get("step")
                    and "first_progress_s" not in results[index]
                ):
                    results[index]["first_progress_s"] = round(time.monotonic() - start, 2)

            client.edit(dict(params, seed=100 + index), image, mask, on_progress=on_progress)
            results[index]["result_s"] = round(time.monotonic() - start, 2)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description="the engine on a local Ray cluster vs one engine (toy models)"
    )
    parser.add_argument("--steps", default="20", help="timestep_respacing of the 8-candidate job")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=40, help="jobs for the memory growth")
    args = parser.parse_args()
    if [name for _index, name in socket.if_nameindex()] != ["lo"]:
        raise SystemExit("run me in a loopback-only network namespace (see the docstring)")
    eight = {
        "prompt": "a red circle",
        "timestep_respacing": args.steps,
        "skip_timesteps": 4,
        "batch_size": 2,
        "iterations_num": 4,
        "seed": 5,
    }
    small = dict(eight, timestep_respacing="2", skip_timesteps=1, batch_size=1, iterations_num=1)
    report: Dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs)",
        "preset": "toy",
        "eight_candidates": eight,
    }
    with tempfile.TemporaryDirectory(prefix="bdb") as folder:
        env = dict(
            os.environ,
            BLENDED_DIFFUSION_TOKEN=TOKEN,
            OMP_NUM_THREADS="1",
            RAY_TMPDIR=folder,
            HOME=folder,  # Ray keeps its cluster token in ~/.ray
            BLENDED_DIFFUSION_STEP_TIMES=str(Path(folder) / "times.json"),
            PYTHONPATH=str(ROOT),
        )
        log_dir = Path(folder)
        for workers in (None, 1, 2):
            name = f"ray_{workers}_workers" if workers else "plain_engine"
            server = Server(workers, env, log_dir)
            try:
                entry: Dict[str, Any] = {"start_s": round(server.start_seconds, 1)}
                timed_job(server, small)  # warm up
                entry["eight"] = timed_job(server, eight, args.repeats)
                entry["one_step_job"] = timed_job(server, small, 5)
                if workers == 2:
                    entry["three_clients"] = three_clients(server, eight)
                if workers:
                    daemons = [p for p in session_pids(server.proc.pid) if p not in server.engine_pids()]
                    entry["ray_idle_rss_mib"] = round(rss_mib(daemons), 1)
                    entry["ray_processes"] = len(daemons)
                if workers == 1 or workers is None:
                    before = rss_mib(server.engine_pids())
                    timed_job(server, small, args.jobs)
                    entry["engine_rss_mib"] = {
                        "before": round(before, 1),
                        f"after_{args.jobs}_jobs": round(rss_mib(server.engine_pids()), 1),
                    }
                report[name] = entry
            finally:
                server.stop()
    one, two = report["ray_1_workers"]["eight"], report["ray_2_workers"]["eight"]
    report["speedup_2_over_1_wall"] = round(one["wall_s"] / two["wall_s"], 2)
    plain = report["plain_engine"]["one_step_job"]["wall_s"]
    report["per_job_overhead_s"] = round(report["ray_1_workers"]["one_step_job"]["wall_s"] - plain, 3)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
