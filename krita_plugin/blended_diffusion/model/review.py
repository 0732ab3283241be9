"""The candidate group's actions for the PluginModel: choose, next / previous, Accept, Discard, More, Vary.

A mixin of plugin.PluginModel (it uses the model's settings, job and messages); kept apart so that module
stays about running jobs. Every refusal is a message in the docker and changes nothing.
"""

from typing import Any, List, Optional

from .. import errors, rounds, workflow
from ..editing import EditRequest
from .document import EditOutcome
from .jobs import AddRound


class GroupActions:
    outcome: Optional[EditOutcome]
    documents: Any
    settings: Any
    flow: workflow.Workflow
    manager: Any
    last_message: str

    # ---------------------------------------------------------- browsing and review

    def candidates(self) -> List[Any]:
        outcome = self.outcome
        if outcome is None or outcome.finished:
            return []
        if not outcome.busy:
            self.documents.follow_undo(outcome)  # Krita's Undo may have taken a round back
        return outcome.response.candidates

    def selected_round(self) -> str:
        """The parameters of the round that made the candidate shown (the docker's round line)."""
        if not self.candidates():
            return ""
        return self.outcome.round_of(self.outcome.chosen)

    def _review(self, action: Any, changes_group: bool = False) -> None:
        if self.outcome is None or self.outcome.finished:
            if changes_group:
                self.show_error(errors.NoGroupError())
            return
        if changes_group and self.outcome.busy:
            self.show_error(errors.BusyError())  # the running round would have no group to go into
            return
        try:
            action(self.outcome)
        except errors.StaleResultError as exc:
            self.outcome = None
            self.last_message = str(exc)
        if self.outcome is not None and self.outcome.finished:
            self.outcome = None
            self.flow.move(workflow.READY if self.manager.running else workflow.IDLE)
        self.changed.emit()

    def choose(self, index: int) -> None:
        self._review(lambda outcome: self.documents.choose(outcome, index))

    def next_candidate(self) -> None:
        self._step(1)

    def previous_candidate(self) -> None:
        self._step(-1)

    def _step(self, delta: int) -> None:
        outcome = self.outcome
        if outcome is not None and not outcome.finished and outcome.layers:
            self.choose((outcome.chosen + delta) % len(outcome.layers))

    def accept(self) -> None:
        self._review(self.documents.accept, changes_group=True)

    def discard(self) -> None:
        self._review(self.documents.discard, changes_group=True)

    # ---------------------------------------------------------- More and Vary

    def _refuse_when_busy(self) -> bool:
        if self.worker is None and self.status_worker is None:
            return False
        self.show_error(errors.BusyError())
        return True

    def more(self, count: Optional[int] = None) -> bool:
        """The docker's More: the same edit with the next seeds into the shown group (api.more)."""
        if self._refuse_when_busy():
            return False
        try:
            request = self.documents.prepare_more(self.outcome, count)
        except (errors.PluginError, ValueError, IndexError) as exc:
            self.show_error(exc)
            return False
        return self._start_round(request, rounds.MORE, "")

    def vary(self, index: Optional[int] = None, strength: Optional[float] = None) -> bool:
        """The docker's Vary: variations of the shown candidate at the docker's Vary strength, with the
        prompt field's prompt (api.vary)."""
        if self._refuse_when_busy():
            return False
        options = self.options_from_settings()
        strength = self.settings.get("vary_strength") if strength is None else strength
        try:
            request, source = self.documents.prepare_vary(self.outcome, index, strength, options.prompt)
        except (errors.PluginError, ValueError, IndexError) as exc:
            self.show_error(exc)
            return False
        self.remember_prompt(options.prompt)
        return self._start_round(request, rounds.VARY, source)

    def _start_round(self, request: EditRequest, kind: str, source: str) -> bool:
        outcome = self.outcome
        outcome.busy = True
        return self._start_job(AddRound(outcome, request, kind, source))

    def _round_done(self, outcome: EditOutcome) -> None:
        """After a round's job (done, failed or cancelled): the group is open for review again."""
        outcome.busy = False
        waiting = self.flow.state in (workflow.READY, workflow.ERROR)
        if outcome is self.outcome and not outcome.finished and waiting:
            self.flow.move(workflow.REVIEW, self.flow.detail)

    # provided by PluginModel
    changed: Any
    worker: Any
    status_worker: Any
    show_error: Any
    options_from_settings: Any
    remember_prompt: Any
    _start_job: Any
