"""A plain-Python signal: the model tells its views (and scripts) that something changed.

Called on the GUI thread only (the worker threads' replies reach the model through the backend's Qt
relay, which runs on that thread), so it needs no lock and no event loop."""

from typing import Any, Callable, List


class Signal:
    def __init__(self) -> None:
        self._slots: List[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable[..., Any]) -> None:
        self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):  # a slot may connect or disconnect others
            slot(*args)
