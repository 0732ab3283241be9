"""The docker's logic: one edit at a time on a worker thread, candidates applied on the GUI thread.

PyQt5 only (Krita objects go through krita_api/api), shared by the docker and the actions."""

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from bridge.limits import DEFAULT_LIMITS, JobLimits

from .. import api, errors, extending, krita_api, recommended, workflow
from ..editing import EditResponse
from ..engine_manager import EngineManager, EngineSettings, saved_engine_settings
from ..estimate import Estimates
from ..params import EditOptions
from ..qt import QObject, pyqtSignal
from ..settings import shared_store
from . import notices
from .group_actions import GroupActions
from .workers import CheckWorker, EditWorker, StatusWorker, engine_status  # noqa: F401 - engine_status: API


class Controller(GroupActions, QObject):
    """Nothing here is modal: errors and questions go to the docker (or, when it is closed, to windows
    that do not block Krita, see notices.py), so no nested event loop ever runs on Krita's GUI thread."""

    changed = pyqtSignal()  # state, status line or candidates changed
    progressed = pyqtSignal(int, int, object)

    def __init__(self) -> None:
        super().__init__()
        self.settings = shared_store()
        recommended.apply(self.settings)  # the last known preset's defaults for the engine in use
        self.flow = workflow.Workflow()
        # One engine for the session, shared with scripts using blended_diffusion.api.
        self.manager: EngineManager = api.default_engine()
        self.manager.configure(self.engine_settings())
        self.manager.notify = self._engine_notice
        self.outcome: Optional[api.EditOutcome] = None
        self.worker: Optional[EditWorker] = None
        self.status_worker: Optional[StatusWorker] = None
        self.last_report = ""  # the last "Check engine" report (scripts and tests read it)
        self._report_box: Any = None
        self._status_engine = ""  # the engine (recommended.engine_key) the running worker talks to
        self.cancel_event: Optional[threading.Event] = None
        self.last_message = ""
        self.engine_limits: JobLimits = DEFAULT_LIMITS  # the connected engine's (its status reply)
        self.message_is_error = False
        self.message_log: List[str] = []  # every message and question shown (scripts and tests read it)
        self.question: Optional[Tuple[str, Callable[[], Any]]] = None  # asked in the docker: text, on Yes
        self.docker: Any = None
        self._pending: Any = None
        self._closing_connected = False
        self.estimates = Estimates()  # the engine's measured speed, for the docker's time estimate

    # ---------------------------------------------------------- settings and engine

    def engine_settings(self) -> EngineSettings:
        return saved_engine_settings(self.settings)

    def apply_engine_settings(self) -> None:
        self.manager.configure(self.engine_settings())
        if self.flow.state in (workflow.READY, workflow.ERROR) and not self.manager.running:
            self.flow.move(workflow.IDLE)
        self._defaults_moved(recommended.apply(self.settings))  # another engine, maybe another preset
        self.changed.emit()

    # ---------------------------------------------------------- the preset's recommended settings

    def _defaults_moved(self, moved: bool) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            self.last_message = f"Settings not saved: {exc}"
        if moved and self.docker is not None:
            self.docker.load_settings(recommended.PRESET_KEYS)

    def on_engine_status(self, status: Dict[str, Any], engine: Optional[str] = None) -> None:
        """An engine's status reply (from an edit, or read_engine_status): its preset's recommended
        settings become the defaults of the settings the user has not changed."""
        if isinstance(status.get("limits"), dict):  # what this engine accepts: the docker's maxima
            self.engine_limits = JobLimits.from_status(status["limits"])
        if not isinstance(status.get("models"), dict):
            self.changed.emit()
            return  # an engine that reports no preset: keep what we have
        self._defaults_moved(
            recommended.remember(self.settings, status, engine or recommended.engine_key(self.settings))
        )
        self.changed.emit()

    def reset_to_recommended(self) -> None:
        """The docker's reset button: the preset's values again for steps, guidance, candidates, ..."""
        recommended.reset(self.settings)
        self._defaults_moved(True)
        self.changed.emit()

    def read_engine_status(self) -> bool:
        """Start (or reach) the engine in the background just to read its status. False when an edit or
        another check is running."""
        worker = StatusWorker(self.manager)
        worker.failed.connect(self.show_error)
        return self._start_status_worker(worker)

    def check_engine(self) -> bool:
        """The docker's "Check engine": the report in a dialog, read on a worker thread (starting the
        engine or running its doctor takes seconds). False when an edit or another check is running."""
        worker = CheckWorker(self.manager)
        worker.reported.connect(self.show_report)
        return self._start_status_worker(worker)

    def _start_status_worker(self, worker: StatusWorker) -> bool:
        if self.worker is not None or self.status_worker is not None:
            return False
        self._status_engine = recommended.engine_key(self.settings)
        worker.engine_status.connect(self._on_worker_status)
        worker.finished.connect(self._on_status_finished)
        self.status_worker = worker
        self.last_message = "Reading the engine's status…"
        worker.start()
        self.changed.emit()
        return True

    def show_report(self, text: str) -> None:
        """The report in a window that does not block Krita (no nested event loop): selectable text."""
        self.last_report = text
        self._report_box = notices.message(text, "Blended Diffusion: engine check", selectable=True)

    def _on_worker_status(self, status: Dict[str, Any]) -> None:
        # A bound method of this QObject, so the reply from a worker thread is handled on the GUI thread.
        self.on_engine_status(status, self._status_engine)

    def _on_status_finished(self) -> None:
        if self.status_worker is not None:
            self.status_worker.wait()
        self.status_worker = None
        if self.last_message.startswith("Reading the engine"):
            self.last_message = ""
        self.changed.emit()

    def _engine_notice(self, message: str) -> None:
        self.last_message = message  # called on the worker thread; shown on the next change

    def connect_application_closing(self) -> None:
        if not self._closing_connected:
            krita_api.on_application_closing(self.shutdown)
            self._closing_connected = True

    def shutdown(self) -> None:
        """Krita is quitting: end a running job and the engine, and let the worker thread finish (a thread
        still running when Krita exits crashes it)."""
        if self.cancel_event is not None:
            self.cancel_event.set()
        self.manager.stop()  # the engine closes the job's connection, so the worker returns at once
        for worker in (self.worker, self.status_worker):
            if worker is not None:
                worker.wait(10000)

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
            detail=s.get("detail"),
        )

    # ---------------------------------------------------------- messages

    def _docker_shown(self) -> bool:
        return self.docker is not None and self.docker.isVisible()

    def say(self, text: str, error: bool = False) -> None:
        """A message in the docker's status area; in a non-modal window when the docker is not shown."""
        self.last_message, self.message_is_error = text, error
        self.message_log.append(text)
        if error and not self._docker_shown():
            notices.message(text)
        self.changed.emit()

    def show_error(self, error: BaseException) -> None:
        self.say(str(error), error=True)

    def ask(self, text: str, on_yes: Callable[[], Any]) -> None:
        """A Yes / No question in the docker (non-modal window when it is not shown); ``on_yes`` on Yes."""
        self.question = (text, on_yes)
        self.message_log.append(text)
        if not self._docker_shown():
            notices.question(text, self.answer)
        self.changed.emit()

    def answer(self, yes: bool) -> None:
        question, self.question = self.question, None
        self.changed.emit()
        if yes and question is not None:
            question[1]()

    def remember_prompt(self, prompt: str) -> None:
        """The prompt joins the history of the prompt field (saved with the settings)."""
        self.settings.remember_prompt(prompt)
        try:
            self.settings.save()
        except OSError as exc:
            self.last_message = f"Settings not saved: {exc}"
        if self.docker is not None:
            self.docker.load_history()

    def clear_prompt_history(self) -> None:
        self.settings.prompt_history = []
        self.remember_prompt("")

    # ---------------------------------------------------------- edit

    def edit_from_action(self) -> None:
        """The "Edit with text" action: run with the docker's settings (asking for a prompt if empty)."""
        options = self.options_from_settings()
        if not options.prompt and not self.settings.get("removal"):
            notices.ask_text(
                "Describe what the selection should show:",
                lambda text: (
                    bool(text.strip())
                    and self._prompt_given(text)
                    and self.start_edit(self.options_from_settings())
                ),
            )
            return
        self.start_edit(options)

    def _prompt_given(self, text: str) -> bool:
        self.settings.set("prompt", text.strip())
        self.settings.save()
        if self.docker is not None:
            self.docker.load_settings()
        return True

    def extend_settings(self) -> "tuple[dict, dict]":
        """(pixels per side, the sides' own prompts) from the docker's Extend section."""
        s = self.settings
        sides = {side: s.get(f"extend_{side}") for side in extending.SIDES}
        prompts = {
            side: s.get(f"extend_prompt_{side}").strip()
            for side in extending.SIDES
            if sides[side] and s.get(f"extend_prompt_{side}").strip()
        }
        return sides, prompts

    def extend_from_action(self) -> None:
        """The "Extend Canvas with Text" action: the docker's sides and prompts (asking for a prompt when
        a growing side has none)."""
        sides, prompts = self.extend_settings()
        options = self.options_from_settings()
        if not options.prompt and any(sides[s] and s not in prompts for s in extending.SIDES):
            notices.ask_text(
                "Describe what the new area should show:",
                lambda text: (
                    self._prompt_given(text)
                    and self.start_extend(self.options_from_settings(), sides, prompts)
                ),
                title="Extend Canvas with Text",
            )
            return
        self.start_extend(options, sides, prompts)

    def start_extend(self, options: EditOptions, sides: dict, side_prompts: dict) -> bool:
        """Grow the canvas from text: the job on a worker thread, the canvas and candidates on apply."""
        if self._refuse_when_busy():
            return False
        try:
            doc = krita_api.active_document()
            request = api.prepare_extend(doc, options, sides, side_prompts)
        except (errors.PluginError, ValueError) as exc:
            self.show_error(exc)
            return False
        self._pending = lambda response: api.apply_extend(doc, request, response, options.prompt)
        return self._start_worker(EditWorker(request, self.manager, threading.Event(), extending.execute))

    def start_edit(self, options: EditOptions, whole_layer: bool = False) -> bool:
        if self._refuse_when_busy():
            return False
        try:
            doc = krita_api.active_document()
            request, source, above = api.prepare(doc, options, whole_layer=whole_layer)
        except errors.NoSelectionError as exc:
            # Asked in the docker, never in a modal dialog: Krita stays usable while the question is open.
            self.ask(f"{exc}\n\nEdit the whole layer instead?", lambda: self.start_edit(options, True))
            return False
        except (errors.PluginError, ValueError) as exc:
            self.show_error(exc)
            return False
        self.question = None
        self.remember_prompt(options.prompt)
        self._pending = (doc, source, above, request, options.prompt)
        mine = set(self.settings.user_changed)
        seed = int(request.params["seed"])

        def resolve(status: Dict[str, Any]) -> Optional[Dict[str, Any]]:
            # Even the first edit with an engine uses its preset's values where the user chose none.
            if not isinstance(status.get("models"), dict):
                return None
            return recommended.resolve(options, recommended.preset_of(status)[1], mine, seed)

        return self._start_worker(EditWorker(request, self.manager, threading.Event(), resolve=resolve))

    def _start_worker(self, worker: EditWorker) -> bool:
        self.cancel_event = worker.cancel
        self.worker = worker
        self._status_engine = recommended.engine_key(self.settings)
        self.worker.progressed.connect(self.progressed)
        self.worker.engine_ready.connect(self._on_engine_ready)
        self.worker.engine_status.connect(self._on_worker_status)
        self.worker.succeeded.connect(self._on_succeeded)
        self.worker.failed.connect(self._on_failed)
        self.worker.finished.connect(self._on_thread_finished)
        self.flow.move(workflow.BUSY if self.manager.running else workflow.STARTING)
        self.last_message, self.message_is_error = "", False
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
        try:
            if callable(self._pending):  # an extension (grows the canvas first) or a More / Vary round
                self.outcome = self._pending(response)
            else:
                doc, source, above, request, prompt = self._pending
                self.outcome = api.apply(doc, source, above, request, response, prompt)
            self.flow.move(workflow.REVIEW)
        except errors.DocumentClosedError as exc:
            # The user closed it on purpose: say so in the docker, no dialog.
            self.flow.move(workflow.READY)
            self.last_message = str(exc)
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
        self._round_done()
        self.changed.emit()

    def cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()


_controller: Optional[Controller] = None


def controller() -> Controller:
    global _controller
    if _controller is None:
        _controller = Controller()
    return _controller
