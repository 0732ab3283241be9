"""A candidate group as the model holds it: what one edit put into the document, and its rounds."""

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from .. import rounds
from ..editing import EditRequest, EditResponse


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
