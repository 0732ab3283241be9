"""The worker: a Ray actor holding the preset's models, running one shard at a time with engine/jobs.py's
runners (the same code, decoding and error mapping as a single engine), streaming progress and the result.

Cancel is a flag: :meth:`ShardWorker.cancel` (a concurrent call: the actor has threads) sets the shard's
``threading.Event``, which the editing loop reads between steps. Ray's own task cancellation cannot stop a
running torch loop.

What crosses in: validated job parameters (JSON scalars) and the request's PNG bytes; out: progress tuples
and the runner's result fields and PNG attachments. Nothing a client sent is unpickled here.
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, Optional, Tuple

from bridge import errors

Event = Tuple[Any, ...]  # ("progress", step, total, offset, preview) | ("result", fields, attachments)
#                          | ("error", code, message, steps after the cancel flag or None)


class ShardJob:
    """What an engine.jobs runner reads of a bridge Job, reporting into a queue instead of a socket."""

    def __init__(
        self,
        key: str,
        kind: str,
        params: Dict[str, Any],
        images: Dict[str, bytes],
        png_level: Optional[int],
        events: queue.Queue,
        cancel: threading.Event,
    ) -> None:
        self.id, self.kind, self.params, self.images = key, kind, params, images
        self.png_level, self.cancel, self._events = png_level, cancel, events
        self.step = 0
        self.step_at_cancel: Optional[int] = None

    def progress(
        self, step: int, total: int, candidate_offset: int = 0, preview_png: Optional[bytes] = None
    ) -> None:
        self.step = step
        self._events.put(("progress", step, total, candidate_offset, preview_png))


class ShardWorker:
    """The actor's class (``ray.remote(...)(ShardWorker)`` in scheduler.py): models loaded once."""

    def __init__(
        self,
        preset: str,
        weights_dir: Optional[str],
        device: Optional[str],
        threads: int = 0,
        job_limits: Any = None,
    ) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from bridge.protocol import Limits
        from engine.jobs import job_runners
        from engine.models.loading import load_models
        from engine.models.registry import get_preset

        self.models = load_models(get_preset(preset), weights_dir, device)
        # params arrive complete (validated on the server, preset defaults in): no defaults here
        # (the server's job limits: max_job_seconds also stops a shard that runs past it)
        self.runners = job_runners(self.models, Limits(), {}, None, preset, job_limits)
        # one long-lived thread runs the shards (one at a time per worker), as a single engine's job thread:
        # a thread per shard would leave each its own malloc arena and torch thread state behind
        self._runner_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard")
        self._jobs: Dict[str, ShardJob] = {}
        self._cancelled: set = set()  # keys cancelled before their shard arrived
        self._lock = threading.Lock()

    def describe(self) -> Dict[str, Any]:
        import ray

        models = self.models
        return {
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "device": str(models.device),
            "preset": models.preset,
            "image_size": models.image_size,
            "class_cond": models.class_cond,
            "method": getattr(models, "method", "paper"),
            # a latent preset has no diffusion flags: the shards plan with the editor's own default
            "diffusion_steps": int(getattr(models, "diffusion_flags", {}).get("diffusion_steps", 1000)),
        }

    def status(self) -> Dict[str, Any]:
        return self.runners["edit"].status()

    def admit(
        self,
        kind: str,
        checked: Dict[str, Any],
        image_pixels: int,
        canvas_pixels: int,
        windows: int,
        detail: Tuple[int, int] = (0, 0),
    ) -> Tuple[Any, ...]:
        """Admission of a validated request on this worker's device (engine.jobs' estimate of memory and
        time): ("ok", params to run with) or ("error", code, message)."""
        try:
            runner = self.runners[kind]  # an extension's detail is (0, 0): it has no such stage
            return ("ok", runner._admit(checked, image_pixels, canvas_pixels, windows, tuple(detail)))
        except errors.JobFailed as exc:
            return ("error", exc.code, exc.message)

    def cancel(self, key: str) -> Optional[int]:
        """Set the shard's flag; the step it had reached (None if it is not running here)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                self._cancelled.add(key)
                return None
            if job.step_at_cancel is None:
                job.step_at_cancel = job.step
            job.cancel.set()
            return job.step

    def run_shard(
        self, key: str, kind: str, params: Dict[str, Any], images: Dict[str, bytes], png_level: Optional[int]
    ) -> Iterator[Event]:
        """Run one shard; yields progress events, then one result or error event (a streaming generator)."""
        events: queue.Queue = queue.Queue()
        job = ShardJob(key, kind, params, images, png_level, events, threading.Event())
        with self._lock:
            self._jobs[key] = job
            if key in self._cancelled:
                self._cancelled.discard(key)
                job.step_at_cancel = 0
                job.cancel.set()

        def work() -> None:
            try:
                fields, attachments = self.runners[kind].run(job)
                events.put(("result", fields, list(attachments)))
            except errors.JobFailed as exc:
                events.put(("error", exc.code, exc.message, _after(job)))
            except BaseException as exc:  # noqa: BLE001 - reported to the server, the actor lives on
                events.put(("error", errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", None))
                traceback.print_exc()
            finally:
                with self._lock:
                    self._jobs.pop(key, None)

        self._runner_thread.submit(work)
        while True:
            event = events.get()
            yield event
            if event[0] != "progress":
                return


def _after(job: ShardJob) -> Optional[int]:
    """Candidate-steps the shard made after its cancel flag was set (None: it was not cancelled)."""
    return None if job.step_at_cancel is None else job.step - job.step_at_cancel
