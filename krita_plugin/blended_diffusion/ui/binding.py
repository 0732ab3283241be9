"""The model's signals as Qt signals, for widgets: a Qt connection ends by itself when its widget is
deleted (Krita deletes a docker with its window), which a plain-Python one would not."""

from typing import Any, Dict

from ..qt import QObject, pyqtSignal


class ModelSignals(QObject):
    changed = pyqtSignal()
    progressed = pyqtSignal(int, int, object)  # step, total, preview PNG bytes or None
    settings_loaded = pyqtSignal(object)  # keys, or None for all
    history_changed = pyqtSignal()

    def __init__(self, model: Any) -> None:
        super().__init__()
        model.changed.connect(self.changed.emit)
        model.progressed.connect(self.progressed.emit)
        model.settings_loaded.connect(self.settings_loaded.emit)
        model.history_changed.connect(self.history_changed.emit)


_signals: Dict[int, ModelSignals] = {}


def signals_of(model: Any) -> ModelSignals:
    """One ModelSignals per model, for as long as the model lives (the plugin's lives with Krita)."""
    if id(model) not in _signals:
        _signals[id(model)] = ModelSignals(model)
    return _signals[id(model)]
