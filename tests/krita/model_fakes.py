"""Fakes for the plugin model's ports (model/ports.py): documents, worker threads, windows, the engine.

Plain Python: the model is driven as the docker drives it, and the tests play the worker threads' events
(engine ready, succeeded, failed, finished) by hand, on the test's thread as the backend would on Krita's
GUI thread."""

from typing import Any, Dict, List, Optional, Tuple

from blended_diffusion import errors
from blended_diffusion.editing import CandidatePatch, EditRequest, EditResponse
from blended_diffusion.model.document import EditOutcome
from blended_diffusion.model.jobs import AddRound, JobEvents, PlaceEdit, PlaceExtension
from blended_diffusion.model.plugin import PluginModel
from blended_diffusion.settings import SettingsStore

SIZE = 4  # the fake region's side


class FakeDoc:
    def __init__(self, name: str) -> None:
        self.name, self.open = name, True

    def __repr__(self) -> str:
        return f"FakeDoc({self.name})"


def request(seed: int = 7) -> EditRequest:
    params = {"seed": seed, "batch_size": 2, "iterations_num": 1, "timestep_respacing": "10", "prompt": "p"}
    return EditRequest((0, 0, SIZE, SIZE), b"\x80" * (SIZE * SIZE * 4), b"\xff" * (SIZE * SIZE), params)


def response(count: int = 2, seed: int = 7) -> EditResponse:
    patch = b"\x10\x20\x30\xff" * (SIZE * SIZE)
    box = (0, 0, SIZE, SIZE)
    scores = [{"combined": 0.5 + i} for i in range(count)]
    return EditResponse([CandidatePatch(i + 1, seed + i, scores[i], box, patch) for i in range(count)])


class FakeDocuments:
    """Krita's documents: the active one, and what placing, choosing, accepting did."""

    def __init__(self, active: FakeDoc) -> None:
        self.active = active
        self.placed: List[Any] = []
        self.calls: List[Tuple[str, Any]] = []
        self.selection = True
        self.regions = False  # the active layer has visible selection masks
        self.fail_place: Optional[Exception] = None

    def active_document(self) -> Any:
        return self.active

    def document_open(self, doc: Any) -> bool:
        return doc.open

    def prepare_edit(self, doc: Any, options: Any, whole_layer: bool) -> Tuple[EditRequest, Any, Any]:
        self.calls.append(("prepare_edit", whole_layer))
        if not self.selection and not whole_layer:
            raise errors.NoSelectionError()
        return request(), f"source of {doc.name}", f"above in {doc.name}"

    def has_regions(self, doc: Any) -> bool:
        return self.regions

    def prepare_extend(self, doc: Any, options: Any, sides: Dict[str, int], side_prompts: Any) -> Any:
        self.calls.append(("prepare_extend", dict(sides)))
        return request()

    def place(self, pending: Any, reply: EditResponse) -> EditOutcome:
        self.placed.append(pending)
        if self.fail_place is not None:
            raise self.fail_place
        if isinstance(pending, AddRound):
            pending.outcome.response.candidates.extend(reply.candidates)
            return pending.outcome
        assert isinstance(pending, (PlaceEdit, PlaceExtension))
        layers = [f"layer {c.rank}" for c in reply.candidates]
        source = getattr(pending, "source", None)
        return EditOutcome(pending.doc, source, "group", layers, reply, pending.request, pending.prompt)

    def prepare_more(self, outcome: Optional[EditOutcome], count: Optional[int]) -> EditRequest:
        if outcome is None:
            raise errors.NoGroupError()
        return request(seed=99)

    def prepare_vary(self, outcome: Any, index: Any, strength: float, prompt: str) -> Tuple[EditRequest, str]:
        return request(seed=50), f"variation at {strength}"

    def follow_undo(self, outcome: EditOutcome) -> None:
        self.calls.append(("follow_undo", outcome.doc))

    def choose(self, outcome: EditOutcome, index: int) -> None:
        if outcome.group is None:
            raise errors.StaleResultError()
        outcome.chosen = index

    def accept(self, outcome: EditOutcome) -> Any:
        outcome.finished = True
        return "accepted layer"

    def discard(self, outcome: EditOutcome) -> None:
        outcome.finished = True

    def on_application_closing(self, callback: Any) -> None:
        self.calls.append(("on_application_closing", callback))


class FakeThread:
    def __init__(self) -> None:
        self.waited: List[int] = []

    def wait(self, msecs: int = -1) -> bool:
        self.waited.append(msecs)
        return True

    def isRunning(self) -> bool:  # noqa: N802 - QThread's name
        return False


class FakeJobs:
    """The worker threads: each start recorded; the test plays the events."""

    def __init__(self) -> None:
        self.started: List[Dict[str, Any]] = []

    def start_job(self, manager: Any, req: Any, cancel: Any, events: JobEvents, run_job: Any, resolve=None):
        thread = FakeThread()
        self.started.append(dict(request=req, cancel=cancel, events=events, resolve=resolve, thread=thread))
        return thread

    def start_status(self, manager: Any, events: JobEvents, check: bool = False) -> FakeThread:
        thread = FakeThread()
        self.started.append(dict(events=events, check=check, thread=thread))
        return thread

    @property
    def events(self) -> JobEvents:
        return self.started[-1]["events"]


class FakeNotices:
    def __init__(self) -> None:
        self.shown: List[Tuple[str, str]] = []

    def message(self, text: str, title: str = "", selectable: bool = False) -> None:
        self.shown.append(("message", text))

    def question(self, text: str, on_answer: Any) -> None:
        self.shown.append(("question", text))

    def ask_text(self, label: str, on_text: Any, title: str = "") -> None:
        self.shown.append(("ask_text", label))


class FakeEngine:
    """The engine manager as the model sees it."""

    def __init__(self) -> None:
        self.running, self.status, self.settings, self.stopped = False, {}, None, 0
        self.notify: Any = None

    def configure(self, settings: Any) -> None:
        self.settings = settings

    def stop(self) -> None:
        self.stopped += 1


def make_model(tmp_path: Any, active: Optional[FakeDoc] = None):
    """(model, documents, jobs, notices) over settings in ``tmp_path``."""
    documents = FakeDocuments(active or FakeDoc("a"))
    jobs, notices = FakeJobs(), FakeNotices()
    store = SettingsStore(str(tmp_path / "settings.json"))
    store.set("prompt", "a red kite")
    model = PluginModel(store, FakeEngine(), documents, jobs, notices)
    return model, documents, jobs, notices


def finish(jobs: FakeJobs, reply: Optional[EditResponse] = None, error: Optional[Exception] = None) -> None:
    """The worker thread's end, as the backend delivers it: ready, the reply (or the error), finished."""
    events = jobs.events
    events.engine_ready("fake device")
    if error is not None:
        events.failed(error)
    else:
        events.succeeded(reply or response())
    events.finished()
