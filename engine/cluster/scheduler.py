"""Jobs on a pool of worker actors: the bridge server's job queue when it serves a Ray cluster.

:class:`ClusterQueue` has :class:`bridge.jobqueue.JobQueue`'s interface (submit, cancel, cancel_owned_by,
snapshot, start, stop), so the server and its protocol are unchanged. Each job is split into shards
(shards.py) when it is accepted; a dispatcher thread hands shards to free workers, round robin over the
clients (one shard of each client's oldest job in turn), and one thread per running shard reads the
worker's stream of progress and result.

Faults: a worker that dies (its process killed, its node gone) is dropped, its shard goes back to the
front of its job's shards and reruns elsewhere with the same seeds (the same bytes); the pool starts a
replacement actor in the background. With no live worker left, the jobs that still need one end with a
clear error and the server keeps serving.
"""

from __future__ import annotations

import collections
import logging
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from bridge import errors
from bridge.jobqueue import Job, error_fields
from engine.cluster.shards import ProgressMerge, RunnerOutput, Shard, merge_results, split_edit, whole_job

log = logging.getLogger("engine.cluster")

NO_WORKER = "no cluster worker is left to run this job (all have died); start workers and try again"


@dataclass(eq=False)
class Worker:
    """One actor and what the scheduler knows of it."""

    handle: Any
    info: Dict[str, Any] = field(default_factory=dict)  # ShardWorker.describe()
    shard_key: Optional[str] = None  # the shard it runs now
    jobs_done: int = 0


@dataclass(eq=False)
class ClusterJob:
    job: Job
    shards: List[Shard]
    pending: Deque[Shard]
    running: Dict[int, Worker] = field(default_factory=dict)  # shard index -> worker
    keys: Dict[int, str] = field(default_factory=dict)  # shard index -> key of its current run
    outputs: Dict[int, RunnerOutput] = field(default_factory=dict)
    failure: Optional[Tuple[str, str]] = None
    started: bool = False
    finished: bool = False
    runs: int = 0  # shard runs started (reruns included): unique keys
    workers_used: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # progress merge + send order
    merge: Optional[ProgressMerge] = None


def _send_cancels(targets: List[Tuple[Worker, str]]) -> None:
    for worker, key in targets:
        try:
            worker.handle.cancel.remote(key)
        except Exception as exc:  # noqa: BLE001 - the worker or the cluster is gone: its shard ends anyway
            log.info("cancel of %s not delivered: %s", key, exc)


class WorkerPool:
    """The live actors; ``make_actor()`` makes one more (a replacement for a dead one)."""

    def __init__(self, make_actor: Callable[[], Any], ready_timeout: float = 600.0) -> None:
        self.make_actor = make_actor
        self.ready_timeout = ready_timeout
        self.workers: List[Worker] = []
        self.replacing = 0

    def start(self, count: int) -> None:
        import ray

        handles = [self.make_actor() for _ in range(count)]
        infos = ray.get([handle.describe.remote() for handle in handles], timeout=self.ready_timeout)
        self.workers = [Worker(handle, info) for handle, info in zip(handles, infos)]

    def replace(self, on_ready: Callable[[Worker], None]) -> None:
        """Start an actor in the background; ``on_ready(worker)`` once its models are loaded."""
        import ray

        self.replacing += 1

        def wait() -> None:
            try:
                handle = self.make_actor()
                info = ray.get(handle.describe.remote(), timeout=self.ready_timeout)
            except Exception as exc:  # noqa: BLE001 - e.g. no resources left for it: the pool stays smaller
                log.warning("no replacement worker: %s", str(exc).splitlines()[0] if str(exc) else exc)
                self.replacing -= 1
                return
            self.replacing -= 1
            on_ready(Worker(handle, info))

        threading.Thread(target=wait, name="replace-worker", daemon=True).start()


class ClusterQueue:
    """Runs jobs on the pool's workers, many at once, fair over clients (bridge.jobqueue.JobQueue's API)."""

    def __init__(
        self,
        pool: WorkerPool,
        max_queued: int = 32,
        diffusion_steps: int = 1000,
        replace: bool = True,
        head_problem: Optional[Callable[[], Optional[str]]] = None,
        max_per_owner: Optional[int] = None,
    ) -> None:
        self.pool = pool
        self._max_per_owner = max_per_owner  # queued and running jobs one client may hold
        self.head_problem = head_problem  # why the Ray head does not answer, None when it does
        self._max_queued = max_queued
        self._diffusion_steps = diffusion_steps
        self._replace = replace
        self._lock = threading.Condition()
        self._owners: Dict[Any, Deque[ClusterJob]] = {}
        # round robin: the client served least recently goes first; one never served by arrival
        self._turn: Dict[Any, Tuple[int, int]] = {}
        self._turns = 0
        self.cancels = {"shards": 0, "max_steps_after_flag": 0}  # how fast a cancel stopped the shards
        self.unavailable: Optional[str] = None  # why, while the Ray head does not answer
        self._free: List[Worker] = list(pool.workers)
        self._stopping = False
        self._threads: List[threading.Thread] = []
        self._dispatcher = threading.Thread(target=self._dispatch, name="cluster-dispatch", daemon=True)

    # --- the JobQueue interface

    def start(self) -> None:
        self._dispatcher.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            for cluster_job in self._all_jobs():
                self._fail(cluster_job, errors.SHUTTING_DOWN, "the engine is shutting down")
            self._lock.notify_all()
        self._dispatcher.join(timeout)
        for thread in list(self._threads):
            thread.join(timeout)

    def submit(self, job: Job, accepted: Callable[[int], None]) -> None:
        with self._lock:
            if self._stopping:
                raise errors.JobFailed(errors.SHUTTING_DOWN, "the engine is shutting down")
            if self.unavailable is not None:
                raise errors.JobFailed(errors.ENGINE_ERROR, self.unavailable)
            if not self.pool.workers:
                raise errors.JobFailed(errors.ENGINE_ERROR, NO_WORKER)
            waiting = sum(1 for cluster_job in self._all_jobs() if not cluster_job.started)
            if waiting >= self._max_queued:
                raise errors.JobFailed(errors.QUEUE_FULL, f"{waiting} jobs are waiting already")
            held = sum(1 for c in self._owners.get(job.owner, ()) if not c.finished)
            if self._max_per_owner is not None and held >= self._max_per_owner:
                raise errors.JobFailed(
                    errors.QUEUE_FULL,
                    f"this connection has {held} jobs queued or running, the limit per connection "
                    f"(max_jobs_per_connection {self._max_per_owner}): wait for one to finish",
                )
            if job.kind == "edit":
                shards = split_edit(job.params, len(self.pool.workers), self._diffusion_steps)
            else:
                shards = whole_job(job.params)
            cluster_job = ClusterJob(job, shards, collections.deque(shards), merge=ProgressMerge(shards))
            if job.owner not in self._owners:
                self._owners[job.owner] = collections.deque()
                self._turns += 1
                self._turn[job.owner] = (-1, self._turns)
            self._owners[job.owner].append(cluster_job)
            job.position = self._positions().get(cluster_job, 0)
            accepted(job.position)
            self._lock.notify_all()

    def cancel(self, job_id: str, owner: Any) -> Optional[str]:
        with self._lock:
            for cluster_job in self._owners.get(owner, ()):
                if cluster_job.job.id == job_id and not cluster_job.finished:
                    state = "running" if cluster_job.started else "queued"
                    why = "the job was cancelled" + ("" if cluster_job.started else " while queued")
                    self._fail(cluster_job, errors.CANCELLED, why)
                    return state
        return None

    def cancel_owned_by(self, owner: Any) -> int:
        with self._lock:
            jobs = [cluster_job for cluster_job in self._owners.get(owner, ()) if not cluster_job.finished]
            for cluster_job in jobs:
                self._fail(cluster_job, errors.CANCELLED, "the client disconnected")
        return len(jobs)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            jobs = list(self._all_jobs())
            running = [
                {"job": c.job.id, "step": c.job.step, "total": c.job.total, "shards_running": len(c.running)}
                for c in jobs
                if c.started
            ]
            queued = sorted((c for c in jobs if not c.started), key=lambda c: self._positions()[c])
            return {
                "running": running[0] if running else None,
                "running_jobs": running,
                "queued": [c.job.id for c in queued],
                "length": len(jobs),
                "workers": len(self.pool.workers),
                "workers_free": len(self._free),
                "workers_starting": self.pool.replacing,
            }

    # --- the Ray head gone and back (service.HeadWatch)

    def cluster_lost(self, why: str) -> None:
        """The head does not answer: every job fails with ``why``, the workers are gone with it."""
        with self._lock:
            self.unavailable = why
            self.pool.workers, self._free = [], []
            for cluster_job in self._all_jobs():
                # the shards' streams may never end without their head: the job ends now, without them
                self._fail(cluster_job, errors.ENGINE_ERROR, why, tell_workers=False)
                cluster_job.running.clear()
                self._finish_if_done(cluster_job)
            self._lock.notify_all()

    def cluster_back(self, workers: List[Worker]) -> None:
        with self._lock:
            self.unavailable = None
            self.pool.workers, self._free = list(workers), list(workers)
            log.info("the cluster is back: %d worker(s)", len(workers))
            self._lock.notify_all()

    # --- scheduling (the caller holds the lock)

    def _all_jobs(self) -> List[ClusterJob]:
        return [cluster_job for jobs in self._owners.values() for cluster_job in jobs]

    def _in_turn(self) -> List[Any]:
        return sorted(self._owners, key=lambda owner: self._turn[owner])

    def _positions(self) -> Dict[ClusterJob, int]:
        """Queue position of each job not started yet, in the order round robin will start them
        (position 0: running); the started ones go first."""
        ahead = 1 if any(c.started for c in self._all_jobs()) else 0
        waiting = [[c for c in self._owners[owner] if not c.started] for owner in self._in_turn()]
        order: List[ClusterJob] = []
        for turn in range(max((len(w) for w in waiting), default=0)):
            order.extend(w[turn] for w in waiting if turn < len(w))
        return {cluster_job: ahead + index for index, cluster_job in enumerate(order)}

    def _announce_positions(self) -> None:
        for cluster_job, position in self._positions().items():
            if cluster_job.job.position != position:
                cluster_job.job.position = position
                cluster_job.job.owner.send("queued", {"job": cluster_job.job.id, "position": position})

    def _next_shard(self) -> Optional[Tuple[ClusterJob, Shard]]:
        """Round robin over clients: the first client in turn with a shard to run; it moves to the back."""
        for owner in self._in_turn():
            for cluster_job in self._owners[owner]:
                if cluster_job.pending and cluster_job.failure is None:
                    self._turns += 1
                    self._turn[owner] = (self._turns, 0)
                    return cluster_job, cluster_job.pending.popleft()
        return None

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                picked = None
                while not self._stopping:
                    if self._free:
                        picked = self._next_shard()
                        if picked is not None:
                            break
                    self._lock.wait(1.0)
                if self._stopping:
                    return
                cluster_job, shard = picked
                worker = self._free.pop(0)
                cluster_job.runs += 1
                key = f"{cluster_job.job.id}.{shard.index}.{cluster_job.runs}"
                cluster_job.running[shard.index] = worker
                cluster_job.keys[shard.index] = key
                cluster_job.workers_used.add(id(worker))
                worker.shard_key = key
                if not cluster_job.started:
                    cluster_job.started = True
                    cluster_job.job.position = 0
                    cluster_job.job.owner.send("started", {"job": cluster_job.job.id})
                    log.info("job %s started: %d shard(s)", cluster_job.job.id, len(cluster_job.shards))
                    self._announce_positions()
                thread = threading.Thread(
                    target=self._run_shard, args=(cluster_job, shard, worker, key), name=f"shard-{key}"
                )
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    # --- one shard on one worker (its own thread)

    def _run_shard(self, cluster_job: ClusterJob, shard: Shard, worker: Worker, key: str) -> None:
        import ray
        from ray.exceptions import RayActorError

        job = cluster_job.job
        outcome: Tuple[Any, ...]
        try:
            stream = worker.handle.run_shard.options(num_returns="streaming").remote(
                key, job.kind, shard.params, job.images, job.png_level
            )
            outcome = ("error", errors.INTERNAL_ERROR, "the worker ended the shard without a result")
            for ref in stream:
                event = ray.get(ref)
                if event[0] == "progress":
                    self._progress(cluster_job, shard, *event[1:])
                else:
                    outcome = event
        except RayActorError as exc:
            outcome = ("died", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the head or the object store gone: the cluster is down
            log.error("shard %s: %s", key, traceback.format_exc())
            outcome = ("error", errors.ENGINE_ERROR, f"cluster unavailable: {type(exc).__name__}: {exc}")
        with self._lock:
            self._shard_ended(cluster_job, shard, worker, outcome)
            self._lock.notify_all()

    def _progress(
        self, cluster_job: ClusterJob, shard: Shard, step: int, total: int, offset: int, preview: Any
    ) -> None:
        with cluster_job.lock:
            if cluster_job.failure is not None:
                return
            news = cluster_job.merge.update(shard, step, total)
            if news is not None:
                cluster_job.job.progress(news[0], news[1], shard.first_candidate + offset, preview)

    def _shard_ended(self, cluster_job: ClusterJob, shard: Shard, worker: Worker, outcome: Tuple) -> None:
        cluster_job.running.pop(shard.index, None)
        worker.shard_key = None
        kind = outcome[0]
        if kind == "died" and self.unavailable is not None:
            pass  # the head is gone: cluster_lost has failed the job and dropped the workers
        elif kind == "died":
            log.warning(
                "worker %s died running %s (%s): the shard reruns elsewhere",
                worker.info.get("pid"),
                cluster_job.job.id,
                outcome[1],
            )
            self._worker_died(worker)
            if cluster_job.failure is None:
                cluster_job.pending.appendleft(shard)  # same seeds on another worker: the same bytes
        else:
            worker.jobs_done += 1
            if not self._stopping and worker in self.pool.workers:  # not after the head was lost
                self._free.append(worker)
            if kind == "result":
                cluster_job.outputs[shard.index] = (outcome[1], outcome[2])
            elif cluster_job.failure is None:
                self._fail(cluster_job, outcome[1], outcome[2])
            if (
                kind == "error"
                and outcome[1] == errors.CANCELLED
                and len(outcome) > 3
                and outcome[3] is not None
            ):
                self.cancels["shards"] += 1
                self.cancels["max_steps_after_flag"] = max(self.cancels["max_steps_after_flag"], outcome[3])
        self._finish_if_done(cluster_job)

    def _worker_died(self, worker: Worker) -> None:
        if worker in self.pool.workers:
            self.pool.workers.remove(worker)
        if worker in self._free:
            self._free.remove(worker)
        if not self.pool.workers and self.head_problem is not None and self.unavailable is None:
            self.unavailable = self.head_problem()  # all gone at once: is it the head?
        if not self.pool.workers:
            for cluster_job in self._all_jobs():
                if cluster_job.pending:
                    self._fail(cluster_job, errors.ENGINE_ERROR, self.unavailable or NO_WORKER)
        if self._replace and not self._stopping and self.unavailable is None:
            self.pool.replace(self._worker_ready)

    def _worker_ready(self, worker: Worker) -> None:
        with self._lock:
            if self._stopping or self.unavailable is not None:
                return
            self.pool.workers.append(worker)
            self._free.append(worker)
            log.info("worker %s joined the pool (%d live)", worker.info.get("pid"), len(self.pool.workers))
            self._lock.notify_all()

    def _fail(self, cluster_job: ClusterJob, code: str, message: str, tell_workers: bool = True) -> None:
        """End a job with an error: no more shards start, the running ones are told to stop (their flag)."""
        if cluster_job.failure is not None or cluster_job.finished:
            return
        with cluster_job.lock:
            cluster_job.failure = (code, message)
        cluster_job.job.cancel.set()
        cluster_job.pending.clear()
        targets = [(worker, cluster_job.keys[index]) for index, worker in cluster_job.running.items()]
        if tell_workers and targets:
            # never a Ray call under the queue's lock: it can wait (for a head that is gone, say)
            threading.Thread(target=_send_cancels, args=(targets,), name="cancel-shards", daemon=True).start()
        self._finish_if_done(cluster_job)

    def _finish_if_done(self, cluster_job: ClusterJob) -> None:
        if cluster_job.finished or cluster_job.running:
            return
        job = cluster_job.job
        if cluster_job.failure is None and (
            cluster_job.pending or len(cluster_job.outputs) < len(cluster_job.shards)
        ):
            return
        cluster_job.finished = True
        self._owners[job.owner].remove(cluster_job)
        if not self._owners[job.owner]:
            del self._owners[job.owner], self._turn[job.owner]
        job.images = {}
        if cluster_job.failure is not None:
            code, message = cluster_job.failure
            log.info("job %s ended with %s: %s", job.id, code, message)
            job.owner.send("error", error_fields(code, message, job))
        else:
            outputs = [cluster_job.outputs[shard.index] for shard in cluster_job.shards]
            try:
                fields, attachments = merge_results(outputs, len(cluster_job.workers_used))
            except Exception as exc:  # noqa: BLE001 - the server must outlive any bad result
                log.error("job %s: merging failed:\n%s", job.id, traceback.format_exc())
                job.owner.send(
                    "error", error_fields(errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", job)
                )
            else:
                log.info("job %s finished on %d worker(s)", job.id, len(cluster_job.workers_used))
                job.owner.send("result", dict(fields, job=job.id), attachments)
        self._announce_positions()
