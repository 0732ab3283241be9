"""Jobs and the queue that runs them one at a time: the engine side of the bridge, without the sockets.

A job kind (``edit``, ...) is served by a :class:`JobRunner`; the runner is the engine's business (torch,
the editing loop) and is handed to :class:`bridge.server.BridgeServer`, so this module and the server stay
standard library only and tests drive them with fake runners. A job's owner is a :class:`JobOwner`
(the server's connection, as far as a job needs it): the server imports this module, never the other way.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, Optional, Protocol, Sequence, Tuple

from bridge import errors

log = logging.getLogger("bridge.server")


class JobOwner(Protocol):
    """The client a job reports to (bridge.server's Connection, or a test's fake)."""

    id: int

    def send(
        self,
        msg_type: str,
        fields: Optional[Dict[str, Any]] = None,
        attachments: Sequence[Tuple[str, bytes]] = (),
        droppable: bool = False,
    ) -> bool: ...


class Job:
    """One request of a job kind: what the runner needs, and how it reports back to its client."""

    def __init__(
        self,
        job_id: str,
        owner: JobOwner,
        params: Dict[str, Any],
        images: Dict[str, bytes],
        kind: str = "edit",
        png_level: Optional[int] = None,
    ) -> None:
        self.id = job_id
        self.kind = kind
        # zlib level the client asked for its result PNGs (0: it is on this machine, bytes are free);
        # None: the runner's default
        self.png_level = png_level
        self.owner = owner
        self.params = params
        self.images = images
        self.cancel = threading.Event()
        self.position = -1
        self.step = 0
        self.total = 0

    def progress(
        self, step: int, total: int, candidate_offset: int = 0, preview_png: Optional[bytes] = None
    ) -> None:
        """Called by the runner (on the worker thread) after each diffusion step."""
        self.step, self.total = step, total
        fields = {"job": self.id, "step": step, "total": total, "candidate_offset": candidate_offset}
        attachments = [("preview", preview_png)] if preview_png else []
        self.owner.send("progress", fields, attachments, droppable=bool(attachments))


RunnerOutput = Tuple[Dict[str, Any], Sequence[Tuple[str, bytes]]]


class JobRunner:
    """What the server needs from a job runner. ``run`` raises JobFailed for errors with a specific code.

    ``required_images`` / ``optional_images``: the PNG attachments a request of this kind carries; the
    server checks them (present, PNG, one size) before ``validate``. ``numbered_images``: prefixes of
    numbered attachments the runner also accepts (``region`` for region0, region1, ...), any number of
    them: ``validate`` counts them against its own limit, so that a request over it is told the limit
    rather than "unexpected attachment" (the protocol's max_attachments bounds them before that).
    """

    required_images: Tuple[str, ...] = ("image", "mask")
    optional_images: Tuple[str, ...] = ("init",)
    numbered_images: Tuple[str, ...] = ()

    def accepts_image(self, name: str) -> bool:
        """``name`` is one of this kind's attachments: required, optional or numbered (region0, not
        region01)."""
        if name in self.required_images or name in self.optional_images:
            return True
        return any(_numbered(name, prefix) for prefix in self.numbered_images)

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        """Check a request before it is queued; return the params to run with."""
        return params

    def run(self, job: Job) -> RunnerOutput:
        """Run a job; return the result header fields and the attachments (name, PNG bytes)."""
        raise NotImplementedError

    def status(self) -> Dict[str, Any]:
        """device, models and versions for status replies."""
        return {}


def _numbered(name: str, prefix: str) -> bool:
    number = name[len(prefix) :]
    return name.startswith(prefix) and number.isdigit() and number.isascii() and str(int(number)) == number


class JobQueue:
    """Runs jobs one at a time on a worker thread; the others wait in order and learn their position."""

    def __init__(
        self, runners: Dict[str, JobRunner], max_queued: int = 32, max_per_owner: Optional[int] = None
    ) -> None:
        self._runners = runners
        self._max_queued = max_queued
        # fair under load: one client holds at most this many queued and running jobs, the others keep
        # their place (None: only the queue's own length limits it)
        self._max_per_owner = max_per_owner
        self._lock = threading.Condition()
        self._pending: Deque[Job] = collections.deque()
        self._running: Optional[Job] = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            for job in self._pending:
                job.cancel.set()
                job.owner.send(
                    "error", error_fields(errors.SHUTTING_DOWN, "the engine is shutting down", job)
                )
            self._pending.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job, accepted: Callable[[int], None]) -> None:
        """Queue a job; ``accepted(position)`` is called before the worker can start it."""
        with self._lock:
            if self._stopping:
                raise errors.JobFailed(errors.SHUTTING_DOWN, "the engine is shutting down")
            if len(self._pending) >= self._max_queued:
                raise errors.JobFailed(errors.QUEUE_FULL, f"{len(self._pending)} jobs are waiting already")
            if self._max_per_owner is not None:
                held = sum(1 for queued in self._pending if queued.owner is job.owner)
                held += 1 if self._running is not None and self._running.owner is job.owner else 0
                if held >= self._max_per_owner:
                    raise errors.JobFailed(
                        errors.QUEUE_FULL,
                        f"this connection has {held} jobs queued or running, the limit per connection "
                        f"(max_jobs_per_connection {self._max_per_owner}): wait for one to finish",
                    )
            job.position = len(self._pending) + (1 if self._running is not None else 0)
            accepted(job.position)
            self._pending.append(job)
            self._lock.notify_all()

    def cancel(self, job_id: str, owner: JobOwner) -> Optional[str]:
        """Cancel a job of ``owner``; return its state ("queued" or "running"), None if there is none."""
        with self._lock:
            if self._running is not None and self._running.id == job_id and self._running.owner is owner:
                self._running.cancel.set()
                return "running"
            for job in self._pending:
                if job.id == job_id and job.owner is owner:
                    self._drop_queued(job, "the job was cancelled while queued")
                    return "queued"
        return None

    def cancel_owned_by(self, owner: JobOwner) -> int:
        """Cancel every job of a client that went away; return how many."""
        count = 0
        with self._lock:
            for job in [j for j in self._pending if j.owner is owner]:
                self._drop_queued(job, "the client disconnected")
                count += 1
            if self._running is not None and self._running.owner is owner:
                self._running.cancel.set()
                count += 1
        return count

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            running = self._running
            return {
                "running": None
                if running is None
                else {"job": running.id, "step": running.step, "total": running.total},
                "queued": [job.id for job in self._pending],
                "length": len(self._pending) + (1 if running is not None else 0),
            }

    def _drop_queued(self, job: Job, why: str) -> None:  # caller holds the lock
        self._pending.remove(job)
        job.cancel.set()
        log.info("job %s cancelled while queued: %s", job.id, why)
        job.owner.send("error", error_fields(errors.CANCELLED, why, job))
        self._announce_positions()

    def _announce_positions(self) -> None:  # caller holds the lock
        ahead = 1 if self._running is not None else 0
        for index, job in enumerate(self._pending):
            if job.position != index + ahead:
                job.position = index + ahead
                job.owner.send("queued", {"job": job.id, "position": job.position})

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running = job
                job.position = 0
                self._announce_positions()
            try:
                self._run_one(job)
            finally:
                with self._lock:
                    self._running = None

    def _run_one(self, job: Job) -> None:
        log.info("%s job %s started (connection %d)", job.kind, job.id, job.owner.id)
        job.owner.send("started", {"job": job.id})
        started = time.monotonic()
        try:
            fields, attachments = self._runners[job.kind].run(job)
        except errors.JobFailed as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # the engine must outlive any bad job
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            code, message = errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
        else:
            if job.cancel.is_set():
                code, message = errors.CANCELLED, "the job was cancelled"
            else:
                log.info("job %s finished in %.1f s", job.id, time.monotonic() - started)
                job.owner.send("result", dict(fields, job=job.id), attachments)
                return
        log.info("job %s ended with %s: %s", job.id, code, message)
        job.owner.send("error", error_fields(code, message, job))


def error_fields(
    code: str, message: str, job: Optional[Job] = None, request_id: Any = None
) -> Dict[str, Any]:
    fields: Dict[str, Any] = {"code": code, "message": message}
    if job is not None:
        fields["job"] = job.id
    if request_id is not None:
        fields["re"] = request_id
    return fields
