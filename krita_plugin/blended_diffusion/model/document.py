"""The state of each document: its candidate group (with the group's rounds) and its job in flight.

Plain data: Krita's document and layer objects are held, never called here (``ports.DocumentAccess``
does that)."""

from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

from .jobs import Job
from .outcome import EditOutcome


@dataclass
class DocumentState:
    """What the plugin knows of one document."""

    doc: Any
    outcome: Optional[EditOutcome] = None  # its open candidate group, if any
    job: Optional[Job] = None  # its job in flight, if any


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
