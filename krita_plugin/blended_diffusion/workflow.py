"""The docker's state machine: which actions are possible and what the status line says."""

from typing import Dict, FrozenSet, Optional

IDLE = "idle"  # no engine yet (started on first use)
STARTING = "starting"
READY = "ready"
BUSY = "busy"
REVIEW = "review"  # candidates are in the document, waiting for choose / Accept / Discard
ERROR = "error"

_TRANSITIONS: Dict[str, FrozenSet[str]] = {
    IDLE: frozenset({STARTING, BUSY, ERROR}),
    STARTING: frozenset({READY, ERROR}),
    READY: frozenset({BUSY, STARTING, ERROR, IDLE, REVIEW}),  # REVIEW: a More / Vary round ended
    BUSY: frozenset({READY, REVIEW, ERROR, STARTING}),
    REVIEW: frozenset({READY, BUSY, STARTING, ERROR, IDLE}),
    ERROR: frozenset({STARTING, BUSY, READY, IDLE, REVIEW}),
}


class InvalidTransition(RuntimeError):
    pass


class Workflow:
    def __init__(self) -> None:
        self.state = IDLE
        self.device: Optional[str] = None
        self.detail = ""

    def move(self, state: str, detail: str = "", device: Optional[str] = None) -> None:
        if state not in _TRANSITIONS:
            raise InvalidTransition(f"unknown state {state!r}")
        if state != self.state and state not in _TRANSITIONS[self.state]:
            raise InvalidTransition(f"cannot go from {self.state} to {state}")
        self.state = state
        self.detail = detail
        if device is not None:
            self.device = device

    @property
    def can_edit(self) -> bool:
        return self.state in (IDLE, READY, REVIEW, ERROR)

    @property
    def can_cancel(self) -> bool:
        return self.state in (BUSY, STARTING)

    @property
    def can_review(self) -> bool:
        return self.state == REVIEW

    def status_text(self) -> str:
        """The docker's status line."""
        if self.state == IDLE:
            text = "Engine: not started (starts on first edit)"
        elif self.state == STARTING:
            text = "Engine: starting…"
        elif self.state == READY:
            text = f"Engine: ready ({self.device or 'unknown device'})"
        elif self.state == BUSY:
            text = "Engine: busy"
        elif self.state == REVIEW:
            text = (
                f"Engine: ready ({self.device or 'unknown device'}) — choose a candidate, Accept or Discard"
            )
        else:
            text = "Engine: error"
        return f"{text}: {self.detail}" if self.detail else text
