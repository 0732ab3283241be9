"""What the model asks of the world outside plain Python, handed in by ``blended_diffusion.session``:
Krita's documents (``documents.KritaDocuments``), the worker threads (``backend.threads.JobThreads``) and
the non-modal windows used while the docker is closed (``ui.notices``). Unit tests hand in fakes."""

import threading
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

from ..editing import EditRequest, EditResponse
from ..extending import ExtendRequest
from ..params import EditOptions
from .document import EditOutcome
from .jobs import JobEvents, Pending, Resolver


class DocumentAccess(Protocol):
    def active_document(self) -> Any: ...

    def document_open(self, doc: Any) -> bool: ...

    def prepare_edit(self, doc: Any, options: EditOptions, whole_layer: bool) -> Tuple[EditRequest, Any, Any]:
        """(request, source layer, layer the group goes above); a PluginError changes nothing."""

    def prepare_extend(
        self, doc: Any, options: EditOptions, sides: Dict[str, int], side_prompts: Dict[str, str]
    ) -> ExtendRequest: ...

    def has_regions(self, doc: Any) -> bool:
        """The layer an edit would take has visible selection masks (regions, issue 39)."""

    def place(self, pending: Pending, response: EditResponse) -> EditOutcome:
        """The reply into the document as the pending action says; the group it is in."""

    def prepare_more(self, outcome: Optional[EditOutcome], count: Optional[int]) -> EditRequest: ...

    def prepare_vary(
        self, outcome: Optional[EditOutcome], index: Optional[int], strength: float, prompt: str
    ) -> Tuple[EditRequest, str]: ...

    def follow_undo(self, outcome: EditOutcome) -> None: ...

    def choose(self, outcome: EditOutcome, index: int) -> None: ...

    def accept(self, outcome: EditOutcome) -> Any: ...

    def discard(self, outcome: EditOutcome) -> None: ...

    def on_application_closing(self, callback: Callable[[], Any]) -> None: ...


class JobHandle(Protocol):
    def wait(self, msecs: int = ...) -> bool: ...

    def isRunning(self) -> bool: ...  # noqa: N802 - QThread's name


class JobRunner(Protocol):
    def start_job(
        self,
        manager: Any,
        request: Any,
        cancel: threading.Event,
        events: JobEvents,
        run_job: Callable[..., EditResponse],
        resolve: Optional[Resolver] = None,
    ) -> JobHandle:
        """Run ``run_job(request, client, progress, cancel)`` on a worker thread; events on the GUI thread."""

    def start_status(self, manager: Any, events: JobEvents, check: bool = False) -> JobHandle:
        """Reach the engine only to read its status (``check``: and report on it)."""


class Notices(Protocol):
    def message(self, text: str, title: str = ..., selectable: bool = ...) -> Any: ...

    def question(self, text: str, on_answer: Callable[[bool], Any]) -> Any: ...

    def ask_text(self, label: str, on_text: Callable[[str], Any], title: str = ...) -> Any: ...
