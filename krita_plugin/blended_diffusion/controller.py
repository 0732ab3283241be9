"""The docker's logic: one edit at a time on a worker thread, candidates applied on the GUI thread.

PyQt5 only (Krita objects go through krita_api/api), shared by the docker and the actions."""

import threading
from typing import Any, List, Optional

from PyQt5.QtCore import QObject, QThread, pyqtSignal
from PyQt5.QtWidgets import QMessageBox

from . import api, errors, krita_api, workflow
from .editing import EditRequest, EditResponse, execute
from .engine_manager import EngineManager, EngineSettings, job_error
from .estimate import Estimates
from .params import EditOptions
from .settings import SettingsStore


class EditWorker(QThread):
    """Connects to (or starts) the engine and runs one job; never touches Krita objects."""

    progressed = pyqtSignal(int, int, object)  # step, total, preview PNG bytes or None
    notice = pyqtSignal(str)
    engine_ready = pyqtSignal(str)  # device
    succeeded = pyqtSignal(object)  # EditResponse
    failed = pyqtSignal(object)  # PluginError

    def __init__(self, request: EditRequest, manager: EngineManager, cancel: threading.Event) -> None:
        super().__init__()
        self.request, self.manager, self.cancel = request, manager, cancel

    def run(self) -> None:
        try:
            client = self.manager.connect()
            self.engine_ready.emit(self.manager.device or "")
            try:
                response = execute(
                    self.request, client, lambda s, t, p: self.progressed.emit(s, t, p), self.cancel
                )
            finally:
                client.close()
            self.succeeded.emit(response)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            if self.cancel.is_set():
                self.failed.emit(errors.CancelledError())
            else:
                self.failed.emit(job_error(exc, "" if self.manager.running else self.manager.log_tail()))


class Controller(QObject):
    changed = pyqtSignal()  # state, status line or candidates changed
    progressed = pyqtSignal(int, int, object)

    def __init__(self) -> None:
        super().__init__()
        self.settings = SettingsStore()
        self.flow = workflow.Workflow()
        # One engine for the session, shared with scripts using blended_diffusion.api.
        self.manager: EngineManager = api.default_engine()
        self.manager.configure(self.engine_settings())
        self.manager.notify = self._engine_notice
        self.outcome: Optional[api.EditOutcome] = None
        self.worker: Optional[EditWorker] = None
        self.cancel_event: Optional[threading.Event] = None
        self.last_message = ""
        self.docker: Any = None
        self._pending: Any = None
        self._closing_connected = False
        self.estimates = Estimates()  # the engine's measured speed, for the docker's time estimate

    # ---------------------------------------------------------- settings and engine

    def engine_settings(self) -> EngineSettings:
        s = self.settings
        return EngineSettings(
            mode=s.get("engine_mode"),
            host=s.get("remote_host"),
            port=s.get("remote_port"),
            token=s.get("remote_token"),
            device=s.get("device"),
        )

    def apply_engine_settings(self) -> None:
        self.manager.configure(self.engine_settings())
        if self.flow.state in (workflow.READY, workflow.ERROR) and not self.manager.running:
            self.flow.move(workflow.IDLE)
        self.changed.emit()

    def _engine_notice(self, message: str) -> None:
        self.last_message = message  # called on the worker thread; shown on the next change

    def connect_application_closing(self) -> None:
        if not self._closing_connected:
            krita_api.on_application_closing(self.shutdown)
            self._closing_connected = True

    def shutdown(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
        if self.worker is not None:
            self.worker.wait(5000)
        self.manager.stop()

    def options_from_settings(self) -> EditOptions:
        s = self.settings
        removal = s.get("removal")
        return EditOptions(
            prompt="" if removal else s.get("prompt"),
            candidates=s.get("candidates"),
            strength=s.get("strength"),
            steps=s.get("steps"),
            aug_num=s.get("aug_num"),
            guidance_scale=s.get("guidance_scale"),
            seed=s.get("seed") if s.get("seed_mode") == "fixed" else None,
            scribble=s.get("scribble"),
            background=s.get("background"),
            baseline=s.get("baseline"),
            ddim=s.get("ddim"),
            preview_every=5 if s.get("live_preview") else 0,
            quality=s.get("quality"),
        )

    # ---------------------------------------------------------- messages

    def show_error(self, error: BaseException) -> None:
        self.last_message = str(error)
        parent = self.docker if self.docker is not None else None
        QMessageBox.warning(parent, "Blended Diffusion", str(error))
        self.changed.emit()

    # ---------------------------------------------------------- edit

    def edit_from_action(self) -> None:
        """The "Edit with text" action: run with the docker's settings (asking for a prompt if empty)."""
        options = self.options_from_settings()
        if not options.prompt and not self.settings.get("removal"):
            from PyQt5.QtWidgets import QInputDialog

            text, ok = QInputDialog.getText(
                None, "Edit with text", "Describe what the selection should show:"
            )
            if not ok or not text.strip():
                return
            self.settings.set("prompt", text.strip())
            self.settings.save()
            options = self.options_from_settings()
            if self.docker is not None:
                self.docker.load_settings()
        self.start_edit(options)

    def start_edit(self, options: EditOptions, whole_layer: bool = False) -> bool:
        if self.worker is not None:
            return False
        try:
            doc = krita_api.active_document()
            request, source, above = api.prepare(doc, options, whole_layer=whole_layer)
        except errors.NoSelectionError as exc:
            answer = QMessageBox.question(
                self.docker, "Blended Diffusion", f"{exc}\n\nEdit the whole layer instead?"
            )
            return answer == QMessageBox.Yes and self.start_edit(options, whole_layer=True)
        except (errors.PluginError, ValueError) as exc:
            self.show_error(exc)
            return False
        self._pending = (doc, source, above, request, options.prompt)
        self.cancel_event = threading.Event()
        self.worker = EditWorker(request, self.manager, self.cancel_event)
        self.worker.progressed.connect(self.progressed)
        self.worker.engine_ready.connect(self._on_engine_ready)
        self.worker.succeeded.connect(self._on_succeeded)
        self.worker.failed.connect(self._on_failed)
        self.worker.finished.connect(self._on_thread_finished)
        self.flow.move(workflow.BUSY if self.manager.running else workflow.STARTING)
        self.last_message = ""
        self.worker.start()
        self.changed.emit()
        return True

    def _on_engine_ready(self, device: str) -> None:
        self.estimates.update(getattr(self.manager, "status", {}) or {}, device)
        if self.last_message.startswith("Starting the engine"):
            self.last_message = ""  # started as expected; a restart notice stays visible
        if self.flow.state == workflow.STARTING:
            self.flow.move(workflow.READY, device=device)
        self.flow.move(workflow.BUSY, device=device)
        self.changed.emit()

    def _on_succeeded(self, response: EditResponse) -> None:
        self.estimates.update(getattr(response, "timing", {}) or {})
        doc, source, above, request, prompt = self._pending
        try:
            self.outcome = api.apply(doc, source, above, request, response, prompt)
            self.flow.move(workflow.REVIEW)
        except errors.PluginError as exc:
            self.flow.move(workflow.ERROR, str(exc))
            self.show_error(exc)
        self.changed.emit()

    def _on_failed(self, error: errors.PluginError) -> None:
        if isinstance(error, errors.CancelledError):
            self.flow.move(workflow.READY if self.manager.running else workflow.ERROR, "cancelled")
            self.last_message = str(error)
            self.changed.emit()
            return
        self.flow.move(workflow.ERROR, type(error).__name__)
        self.show_error(error)

    def _on_thread_finished(self) -> None:
        if self.worker is not None:
            self.worker.wait()  # let the thread end before its QThread object is released
        self.worker = None
        self._pending = None
        self.changed.emit()

    def cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()

    # ---------------------------------------------------------- candidates

    def candidates(self) -> List[Any]:
        if self.outcome is None or self.outcome.finished:
            return []
        return self.outcome.response.candidates

    def _review(self, action: Any) -> None:
        if self.outcome is None or self.outcome.finished:
            return
        try:
            action(self.outcome)
        except errors.StaleResultError as exc:
            self.outcome = None
            self.last_message = str(exc)
        if self.outcome is not None and self.outcome.finished:
            self.outcome = None
            self.flow.move(workflow.READY if self.manager.running else workflow.IDLE)
        self.changed.emit()

    def choose(self, index: int) -> None:
        self._review(lambda outcome: api.choose(outcome, index))

    def next_candidate(self) -> None:
        if self.outcome is not None and not self.outcome.finished:
            self.choose((self.outcome.chosen + 1) % len(self.outcome.layers))

    def accept(self) -> None:
        self._review(api.accept)

    def discard(self) -> None:
        self._review(api.discard)


_controller: Optional[Controller] = None


def controller() -> Controller:
    global _controller
    if _controller is None:
        _controller = Controller()
    return _controller
