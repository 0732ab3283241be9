"""Runs the model's jobs on worker threads (workers.py) and hands what they report to the model's
callbacks (model.jobs.JobEvents) on the GUI thread: the model's ``ports.JobRunner``.

Each thread gets a relay, a QObject made on the GUI thread: a signal from the worker thread to a bound
method of that QObject is queued and runs on the GUI thread, where Krita may be called."""

import threading
from typing import Any, List, Optional

from ..model.jobs import JobEvents, Resolver
from ..qt import QObject
from .workers import CheckWorker, EditWorker, StatusWorker


class _Relay(QObject):
    def __init__(self, worker: Any, events: JobEvents) -> None:
        super().__init__()
        self.worker, self.events, self.ended = worker, events, False
        for name in ("progressed", "engine_ready", "engine_status", "succeeded", "failed", "reported"):
            signal = getattr(worker, name, None)
            if signal is not None and getattr(events, name) is not None:
                signal.connect(getattr(self, "_" + name))
        worker.finished.connect(self._finished)

    def _progressed(self, step: int, total: int, preview: Any) -> None:
        self.events.progressed(step, total, preview)

    def _engine_ready(self, device: str) -> None:
        self.events.engine_ready(device)

    def _engine_status(self, status: Any) -> None:
        self.events.engine_status(status)

    def _succeeded(self, response: Any) -> None:
        self.events.succeeded(response)

    def _failed(self, error: Any) -> None:
        self.events.failed(error)

    def _reported(self, text: str) -> None:
        self.events.reported(text)

    def _finished(self) -> None:
        self.worker.wait()  # let the thread end before its QThread object is released
        self.ended = True
        if self.events.finished is not None:
            self.events.finished()


class JobThreads:
    """Starts the threads; keeps each one's relay (and so the thread) referenced until it has ended: the
    relays of ended threads are dropped when the next one starts, never inside their own slot."""

    def __init__(self) -> None:
        self._relays: List[_Relay] = []

    def _start(self, worker: Any, events: JobEvents) -> Any:
        self._relays = [relay for relay in self._relays if not relay.ended]
        self._relays.append(_Relay(worker, events))
        worker.start()
        return worker

    def start_job(
        self,
        manager: Any,
        request: Any,
        cancel: threading.Event,
        events: JobEvents,
        run_job: Any,
        resolve: Optional[Resolver] = None,
    ) -> EditWorker:
        return self._start(EditWorker(request, manager, cancel, run_job, resolve), events)

    def start_status(self, manager: Any, events: JobEvents, check: bool = False) -> StatusWorker:
        return self._start(CheckWorker(manager) if check else StatusWorker(manager), events)
