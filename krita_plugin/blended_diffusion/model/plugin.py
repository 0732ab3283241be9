"""The docker's logic over the plugin's state: one job at a time on a worker thread, its reply placed on
the GUI thread into the document it was made for.

Plain Python: Krita's documents, the worker threads and the non-modal windows are reached through the
ports handed in (``ports.py``); the views bind to the signals below."""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from bridge.limits import DEFAULT_LIMITS, JobLimits

from .. import errors, extending, recommended, workflow
from ..editing import EditResponse, execute, request_label
from ..estimate import Estimates
from ..params import EditOptions
from .document import Documents, DocumentState, EditOutcome
from .jobs import AddRound, Job, JobEvents, Pending, PlaceEdit, PlaceExtension, Resolver
from .options import EngineSettings, edit_options, extend_sides, saved_engine_settings
from .ports import DocumentAccess, JobRunner, Notices
from .review import GroupActions
from .signal import Signal


@dataclass(frozen=True)
class Question:
    """A Yes / No question shown in the docker (or a non-modal window): its text, what Yes does."""

    text: str
    on_yes: Callable[[], Any]


class PluginModel(GroupActions):
    """Nothing here is modal: errors and questions go to the docker (or, when it is closed, to windows
    that do not block Krita, see ui/notices.py), so no nested event loop ever runs on Krita's GUI thread."""

    def __init__(
        self, settings: Any, manager: Any, documents: DocumentAccess, jobs: JobRunner, notices: Notices
    ) -> None:
        self.changed = Signal()  # state, status line or candidates changed
        self.progressed = Signal()  # (step, total, preview PNG bytes or None) of the job in flight
        self.settings_loaded = Signal()  # (keys or None): settings the docker's widgets should show again
        self.history_changed = Signal()  # the prompt history changed
        self.settings = settings
        recommended.apply(self.settings)  # the last known preset's defaults for the engine in use
        self.flow = workflow.Workflow()
        self.documents, self.jobs, self.notices = documents, jobs, notices
        # One engine for the session, shared with scripts using blended_diffusion.api.
        self.manager = manager
        self.manager.configure(self.engine_settings())
        self.manager.notify = self._engine_notice
        self.states = Documents()  # each document's candidate group and job in flight
        self.focus: Optional[DocumentState] = None  # the document whose group the docker shows
        self.status_worker: Any = None  # the thread reading the engine's status, while it runs
        self.last_report = ""  # the last "Check engine" report (scripts and tests read it)
        self._report_box: Any = None
        self._status_engine = ""  # the engine (recommended.engine_key) the running worker talks to
        self.last_message = ""
        self.engine_limits: JobLimits = DEFAULT_LIMITS  # the connected engine's (its status reply)
        self.message_is_error = False
        self.message_log: list = []  # every message and question shown (scripts and tests read it)
        self.question: Optional[Question] = None  # asked in the docker: text, what Yes does
        self.view_shown: Callable[[], bool] = lambda: False
        self._closing_connected = False
        self.estimates = Estimates()  # the engine's measured speed, for the docker's time estimate

    # ---------------------------------------------------------- the state the docker shows

    @property
    def outcome(self) -> Optional[EditOutcome]:
        """The candidate group the docker shows: the one the last job placed."""
        return self.focus.outcome if self.focus is not None else None

    @outcome.setter
    def outcome(self, value: Optional[EditOutcome]) -> None:
        if value is None:
            if self.focus is not None:
                self.focus.outcome = None
            return
        self.focus = self.states.state_for(value.doc)
        self.focus.outcome = value

    @property
    def job(self) -> Optional[Job]:
        """The job in flight (the engine runs one at a time), whichever document it is for."""
        state = self.states.running()
        return state.job if state is not None else None

    @property
    def worker(self) -> Any:
        """The job's worker thread while it runs, else None."""
        job = self.job
        return job.handle if job is not None else None

    @property
    def cancel_event(self) -> Any:
        job = self.job
        return job.cancel if job is not None else None

    def attach_view(self, shown: Callable[[], bool]) -> None:
        """The docker: while ``shown()`` is true, messages and questions go to it rather than to windows."""
        self.view_shown = shown

    # ---------------------------------------------------------- settings and engine

    def engine_settings(self) -> EngineSettings:
        return saved_engine_settings(self.settings)

    def options_from_settings(self) -> EditOptions:
        return edit_options(self.settings)

    def extend_settings(self) -> "tuple[dict, dict]":
        """(pixels per side, the sides' own prompts) from the docker's Extend section."""
        return extend_sides(self.settings)

    def apply_engine_settings(self) -> None:
        self.manager.configure(self.engine_settings())
        if self.flow.state in (workflow.READY, workflow.ERROR) and not self.manager.running:
            self.flow.move(workflow.IDLE)
        self._defaults_moved(recommended.apply(self.settings))  # another engine, maybe another preset
        self.changed.emit()

    def _defaults_moved(self, moved: bool) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            self.last_message = f"Settings not saved: {exc}"
        if moved:
            self.settings_loaded.emit(recommended.PRESET_KEYS)

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
        return self._start_status(JobEvents(failed=self.show_error), check=False)

    def check_engine(self) -> bool:
        """The docker's "Check engine": the report in a window, read on a worker thread (starting the
        engine or running its doctor takes seconds). False when an edit or another check is running."""
        return self._start_status(JobEvents(reported=self.show_report), check=True)

    def _start_status(self, events: JobEvents, check: bool) -> bool:
        if self.worker is not None or self.status_worker is not None:
            return False
        self._status_engine = recommended.engine_key(self.settings)
        events.engine_status = self._on_worker_status
        events.finished = self._on_status_finished
        self.last_message = "Reading the engine's status…"
        self.status_worker = self.jobs.start_status(self.manager, events, check)
        self.changed.emit()
        return True

    def show_report(self, text: str) -> None:
        """The report in a window that does not block Krita (no nested event loop): selectable text."""
        self.last_report = text
        self._report_box = self.notices.message(text, "Blended Diffusion: engine check", selectable=True)

    def _on_worker_status(self, status: Dict[str, Any]) -> None:
        self.on_engine_status(status, self._status_engine)  # looked up here: scripts may wrap it

    def _on_status_finished(self) -> None:
        self.status_worker = None
        if self.last_message.startswith("Reading the engine"):
            self.last_message = ""
        self.changed.emit()

    def _engine_notice(self, message: str) -> None:
        self.last_message = message  # called on the worker thread; shown on the next change

    def connect_application_closing(self) -> None:
        if not self._closing_connected:
            self.documents.on_application_closing(self.shutdown)
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

    # ---------------------------------------------------------- messages

    def say(self, text: str, error: bool = False) -> None:
        """A message in the docker's status area; in a non-modal window when the docker is not shown."""
        self.last_message, self.message_is_error = text, error
        self.message_log.append(text)
        if error and not self.view_shown():
            self.notices.message(text)
        self.changed.emit()

    def show_error(self, error: BaseException) -> None:
        self.say(str(error), error=True)

    def ask(self, text: str, on_yes: Callable[[], Any]) -> None:
        """A Yes / No question in the docker (non-modal window when it is not shown); ``on_yes`` on Yes."""
        self.question = Question(text, on_yes)
        self.message_log.append(text)
        if not self.view_shown():
            self.notices.question(text, self.answer)
        self.changed.emit()

    def answer(self, yes: bool) -> None:
        question, self.question = self.question, None
        self.changed.emit()
        if yes and question is not None:
            question.on_yes()

    def remember_prompt(self, prompt: str) -> None:
        """The prompt joins the history of the prompt field (saved with the settings)."""
        self.settings.remember_prompt(prompt)
        try:
            self.settings.save()
        except OSError as exc:
            self.last_message = f"Settings not saved: {exc}"
        self.history_changed.emit()

    def clear_prompt_history(self) -> None:
        self.settings.prompt_history = []
        self.remember_prompt("")

    # ---------------------------------------------------------- edit and extend

    def edit_from_action(self) -> None:
        """The "Edit with text" action: run with the docker's settings (asking for a prompt if empty)."""
        options = self.options_from_settings()
        regions = self._has_regions()  # each region has its prompt: the docker's is the background's
        if not options.prompt and not self.settings.get("removal") and not regions:
            self.notices.ask_text(
                "Describe what the selection should show:",
                lambda text: (
                    bool(text.strip())
                    and self._prompt_given(text)
                    and self.start_edit(self.options_from_settings())
                ),
            )
            return
        self.start_edit(options)

    def _has_regions(self) -> bool:
        try:
            return bool(self.documents.has_regions(self.documents.active_document()))
        except errors.PluginError:  # no document: the edit itself says so
            return False

    def _prompt_given(self, text: str) -> bool:
        self.settings.set("prompt", text.strip())
        self.settings.save()
        self.settings_loaded.emit(None)
        return True

    def extend_from_action(self) -> None:
        """The "Extend Canvas with Text" action: the docker's sides and prompts (asking for a prompt when
        a growing side has none)."""
        sides, prompts = self.extend_settings()
        options = self.options_from_settings()
        if not options.prompt and any(sides[s] and s not in prompts for s in extending.SIDES):
            self.notices.ask_text(
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
            doc = self.documents.active_document()
            request = self.documents.prepare_extend(doc, options, sides, side_prompts)
        except (errors.PluginError, ValueError) as exc:
            self.show_error(exc)
            return False
        return self._start_job(PlaceExtension(doc, request, options.prompt), extending.execute)

    def start_edit(self, options: EditOptions, whole_layer: bool = False) -> bool:
        if self._refuse_when_busy():
            return False
        try:
            doc = self.documents.active_document()
            request, source, above = self.documents.prepare_edit(doc, options, whole_layer)
        except errors.NoSelectionError as exc:
            # Asked in the docker, never in a modal dialog: Krita stays usable while the question is open.
            self.ask(f"{exc}\n\nEdit the whole layer instead?", lambda: self.start_edit(options, True))
            return False
        except (errors.PluginError, ValueError) as exc:
            self.show_error(exc)
            return False
        self.question = None
        self.remember_prompt(options.prompt)
        mine = set(self.settings.user_changed)
        seed = int(request.params["seed"])

        def resolve(status: Dict[str, Any]) -> Optional[Dict[str, Any]]:
            # Even the first edit with an engine uses its preset's values where the user chose none.
            if not isinstance(status.get("models"), dict):
                return None
            return recommended.resolve(options, recommended.preset_of(status)[1], mine, seed)

        label = request_label(request, options.prompt)
        return self._start_job(PlaceEdit(doc, source, above, request, label), resolve=resolve)

    def _start_job(
        self, pending: Pending, run_job: Any = execute, resolve: Optional[Resolver] = None
    ) -> bool:
        self.states.prune(self.documents.document_open, keep=self.focus)  # closed documents' states go
        job = self.states.state_for(pending.doc).job = Job(pending)
        self._status_engine = recommended.engine_key(self.settings)
        events = JobEvents(
            progressed=self.progressed.emit,
            engine_ready=self._on_engine_ready,
            engine_status=self._on_worker_status,
            succeeded=self._on_succeeded,
            failed=self._on_failed,
            finished=self._on_job_finished,
        )
        self.flow.move(workflow.BUSY if self.manager.running else workflow.STARTING)
        self.last_message, self.message_is_error = "", False
        job.handle = self.jobs.start_job(self.manager, pending.request, job.cancel, events, run_job, resolve)
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
        job = self.job
        if job is None:
            return  # a reply always comes before its thread's end, which clears the job
        try:
            if isinstance(job.pending, AddRound):
                job.pending.outcome.busy = False
            self.outcome = self.documents.place(job.pending, response)
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

    def _on_job_finished(self) -> None:
        state = self.states.running()
        job = state.job if state is not None else None
        if state is not None:
            state.job = None
        if job is not None and isinstance(job.pending, AddRound):
            self._round_done(job.pending.outcome)
        self.changed.emit()

    def cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
