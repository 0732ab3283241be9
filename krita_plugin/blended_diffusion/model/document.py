"""The state of each document: its candidate group (with the group's rounds) and its job in flight.

Plain data: Krita's document and layer objects are held, never called here (``ports.DocumentAccess``
does that)."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Tuple

from .. import rounds
from ..editing import EditRequest, EditResponse

if TYPE_CHECKING:
    from .jobs import Job


@dataclass
class EditOutcome:
    """The candidates an edit put into the document: its candidate group."""

    doc: Any
    source: Any  # the edited paint layer (None for an extended canvas)
    group: Any  # group layer named after the prompt, directly above the source (or the scribble layer)
    layers: List[Any]  # one paint layer per candidate, best first
    response: EditResponse
    request: EditRequest
    prompt: str
    chosen: int = 0
    finished: bool = False
    notes: List[str] = field(default_factory=list)
    # An extension grew the canvas: Krita's resizeImage arguments that take it back on Discard.
    canvas_restore: Optional[Tuple[int, int, int, int]] = None
    rounds: List[Any] = field(default_factory=list)  # rounds.Round of each Edit, More, Vary
    doc_size: Tuple[int, int] = (0, 0)  # the image size the group's selection belongs to
    busy: bool = False  # a More or Vary round is running for this group
    # The groups earlier rounds replaced, for Krita's Undo (iterating.follow_undo): (group, layers,
    # candidates, chosen, number of rounds) each.
    previous: List[Any] = field(default_factory=list)

    def round_of(self, index: int) -> str:
        """What made candidate ``index``: its round's prompt, seed, strength, mode (and Vary's source)."""
        candidate = self.response.candidates[index]
        return rounds.round_summary(self.rounds, candidate.round, candidate.seed)

    @property
    def names(self) -> List[str]:
        return [node.name() for node in self.layers]


@dataclass
class DocumentState:
    """What the plugin knows of one document."""

    doc: Any
    outcome: Optional[EditOutcome] = None  # its open candidate group, if any
    job: Optional["Job"] = None  # its job in flight, if any


class Documents:
    """One DocumentState per document, found by the document's own equality (Krita hands out a new Python
    wrapper for the same document each time; its ``==`` compares the document behind it)."""

    def __init__(self) -> None:
        self._states: List[DocumentState] = []

    def __iter__(self) -> Iterator[DocumentState]:
        return iter(list(self._states))

    def __len__(self) -> int:
        return len(self._states)

    def find(self, doc: Any) -> Optional[DocumentState]:
        return next((s for s in self._states if s.doc is doc or s.doc == doc), None)

    def state_for(self, doc: Any) -> DocumentState:
        state = self.find(doc)
        if state is None:
            state = DocumentState(doc)
            self._states.append(state)
        return state

    def running(self) -> Optional[DocumentState]:
        """The document whose job is in flight."""
        return next((s for s in self._states if s.job is not None), None)

    def prune(self, is_open: Callable[[Any], bool], keep: Optional[DocumentState] = None) -> None:
        """Forget closed documents that have no job in flight (their groups went with them)."""
        self._states = [s for s in self._states if s is keep or s.job is not None or is_open(s.doc)]
