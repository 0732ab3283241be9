"""The model's door to Krita's documents (model.ports.DocumentAccess), over the scripting API's steps:
prepare a job from the document, place its reply as the pending action says, the group's actions."""

from typing import Any, Callable, Dict, Optional, Tuple

from . import api, iterating, krita_api
from .editing import EditRequest, EditResponse
from .extending import ExtendRequest
from .model.document import EditOutcome
from .model.jobs import AddRound, Pending, PlaceEdit, PlaceExtension
from .params import EditOptions


class KritaDocuments:
    """Everything here runs on Krita's GUI thread."""

    def active_document(self) -> Any:
        return krita_api.active_document()  # looked up at call time: scripts may replace it

    def document_open(self, doc: Any) -> bool:
        return krita_api.document_open(doc)

    def prepare_edit(self, doc: Any, options: EditOptions, whole_layer: bool) -> Tuple[EditRequest, Any, Any]:
        return api.prepare(doc, options, whole_layer=whole_layer)

    def has_regions(self, doc: Any) -> bool:
        layer, specs = krita_api.active_regions()
        return layer is not None and any(spec.visible for spec in specs)

    def prepare_extend(
        self, doc: Any, options: EditOptions, sides: Dict[str, int], side_prompts: Dict[str, str]
    ) -> ExtendRequest:
        return api.prepare_extend(doc, options, sides, side_prompts)

    def place(self, pending: Pending, response: EditResponse) -> EditOutcome:
        if isinstance(pending, PlaceEdit):
            p = pending
            return api.apply(p.doc, p.source, p.above, p.request, response, p.prompt)
        if isinstance(pending, PlaceExtension):
            return api.apply_extend(pending.doc, pending.request, response, pending.prompt)
        if isinstance(pending, AddRound):
            iterating.add_round(pending.outcome, pending.request, response, pending.kind, pending.source)
            return pending.outcome
        raise TypeError(f"no way to place {type(pending).__name__}")

    def prepare_more(self, outcome: Optional[EditOutcome], count: Optional[int]) -> EditRequest:
        return iterating.prepare_more(outcome, count)

    def prepare_vary(
        self, outcome: Optional[EditOutcome], index: Optional[int], strength: float, prompt: str
    ) -> Tuple[EditRequest, str]:
        return iterating.prepare_vary(outcome, index, strength, prompt)

    def follow_undo(self, outcome: EditOutcome) -> None:
        iterating.follow_undo(outcome)

    def choose(self, outcome: EditOutcome, index: int) -> None:
        api.choose(outcome, index)

    def accept(self, outcome: EditOutcome) -> Any:
        return api.accept(outcome)

    def discard(self, outcome: EditOutcome) -> None:
        api.discard(outcome)

    def on_application_closing(self, callback: Callable[[], Any]) -> None:
        krita_api.on_application_closing(callback)
