"""Krita actions: Edit with text (Ctrl+Alt+E by default), Extend Canvas with Text, accept / discard, next
and previous candidate (Ctrl+Alt+. and Ctrl+Alt+, by default), More and Vary."""

from typing import Any

from ..krita_api import Extension
from ..session import model

ACTIONS = (
    # id (also in blended_diffusion.action), text, the model's method
    ("blended_diffusion_edit", "Edit with Text…", "edit_from_action"),
    ("blended_diffusion_extend", "Extend Canvas with Text…", "extend_from_action"),
    ("blended_diffusion_accept", "Accept Candidate", "accept"),
    ("blended_diffusion_discard", "Discard Candidates", "discard"),
    ("blended_diffusion_next", "Next Candidate", "next_candidate"),
    ("blended_diffusion_previous", "Previous Candidate", "previous_candidate"),
    ("blended_diffusion_more", "More Candidates", "more"),
    ("blended_diffusion_vary", "Vary Candidate", "vary"),
    ("blended_diffusion_cancel", "Cancel Edit", "cancel"),
)


class BlendedDiffusionExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        model().connect_application_closing()

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's API name
        for action_id, text, method in ACTIONS:
            action = window.createAction(action_id, text, "tools/scripts/blended_diffusion")
            action.triggered.connect(lambda _checked=False, m=method: getattr(model(), m)())
