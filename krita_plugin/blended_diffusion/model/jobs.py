"""A job in flight and what is done with its reply: one of three small typed actions.

The reply of an edit becomes a new candidate group (``PlaceEdit``), an extension's grows the canvas first
(``PlaceExtension``), a More / Vary round's joins its group (``AddRound``). The document side
(``ports.DocumentAccess.place``) does the placing; the model only keeps which one is pending."""

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Union

from ..editing import EditRequest
from ..extending import ExtendRequest
from .outcome import EditOutcome


@dataclass(frozen=True)
class PlaceEdit:
    """An edit of a selection: its candidates go into a new group above ``above``."""

    doc: Any
    source: Any  # the edited paint layer
    above: Any  # the layer the group goes above (the scribble layer in scribble mode)
    request: EditRequest
    prompt: str


@dataclass(frozen=True)
class PlaceExtension:
    """An extension: the canvas grows, then the candidates go into a group on top of the stack."""

    doc: Any
    request: ExtendRequest
    prompt: str


@dataclass(frozen=True)
class AddRound:
    """A More or Vary round: its candidates join ``outcome``'s group, which is re-ranked."""

    outcome: EditOutcome
    request: EditRequest
    kind: str  # rounds.MORE or rounds.VARY
    source: str = ""  # Vary: the candidate it started from, as the user saw it

    @property
    def doc(self) -> Any:
        return self.outcome.doc


Pending = Union[PlaceEdit, PlaceExtension, AddRound]


@dataclass
class Job:
    """The job a document has in flight (the engine runs one at a time, so the plugin has one)."""

    pending: Pending
    cancel: threading.Event = field(default_factory=threading.Event)
    handle: Any = None  # the backend's worker thread, while it runs (scripts and tests read it)

    @property
    def doc(self) -> Any:
        return self.pending.doc


Callback = Callable[..., Any]


@dataclass
class JobEvents:
    """What a worker thread reports, delivered on the GUI thread by the backend (each may be left out)."""

    progressed: Optional[Callback] = None  # (step, total, preview PNG bytes or None)
    engine_ready: Optional[Callback] = None  # (device)
    engine_status: Optional[Callback] = None  # (the engine's status dict)
    succeeded: Optional[Callback] = None  # (EditResponse)
    failed: Optional[Callback] = None  # (PluginError)
    reported: Optional[Callback] = None  # (the "Check engine" report's text)
    finished: Optional[Callback] = None  # () once the thread has ended


Resolver = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]
