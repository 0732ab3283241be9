"""The docker's Regions list (issue 39): the edited layer's selection masks, each named by its prompt.

Krita sends no signal when layers change, so the docker's poll calls ``poll()``; the list is rebuilt only
when the masks' ids, names or visibility changed. Editing a row's text renames its mask (the prompt is
the mask's name, so Krita's Layers docker shows the same); a hidden mask is listed greyed and skipped.
"""

from typing import Any, List, Optional, Tuple

from .. import krita_api
from ..qt import QLabel, QListWidget, QListWidgetItem, Qt, QVBoxLayout, QWidget
from ..regions import RegionSpec, used

MAX_ROWS = 6  # more scroll
HINT = (
    "Regions: add Selection Masks to the layer (right-click it > Add > Selection Mask), paint each one "
    "and name it by what it should become. Edit with text then edits every visible mask in one job, the "
    "prompt above for the rest; hidden masks are skipped."
)


class RegionsPanel(QWidget):
    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setToolTip(HINT)
        layout.addWidget(self.summary)
        self.list = QListWidget()
        self.list.setToolTip("Double-click a region to change its prompt (its mask's name)")
        layout.addWidget(self.list)
        self._layer: Any = None
        self._seen: Optional[Tuple[Any, ...]] = None
        self._filling = False
        self.list.itemChanged.connect(self._renamed)
        self.show_specs(None, [])

    def poll(self) -> None:
        """Follow the active layer's selection masks (GUI thread, from the docker's timer)."""
        layer, specs = krita_api.active_regions()
        key = (None if layer is None else layer.uniqueId(), tuple(specs))
        if key != self._seen:
            self._seen = key
            self.show_specs(layer, specs)

    def show_specs(self, layer: Any, specs: List[RegionSpec]) -> None:
        self._layer = layer
        self._filling = True
        try:
            self.list.clear()
            for spec in specs:
                item = QListWidgetItem(spec.name)
                item.setData(Qt.ItemDataRole.UserRole, spec.uid)
                flags = item.flags() | Qt.ItemFlag.ItemIsEditable
                item.setFlags(flags)
                if not spec.visible:
                    item.setForeground(Qt.GlobalColor.gray)
                    item.setToolTip("hidden: skipped by Edit with text")
                self.list.addItem(item)
        finally:
            self._filling = False
        shown = len(used(specs))
        self.list.setVisible(bool(specs))
        rows = max(1, min(len(specs), MAX_ROWS))  # as tall as its rows: the docker is tall enough already
        row = max(18, self.list.sizeHintForRow(0))
        self.list.setFixedHeight(rows * row + 2 * self.list.frameWidth())
        if not specs:
            self.summary.setText("Regions: none (the selection is edited). Hover for how to add them.")
        else:
            hidden = len(specs) - shown
            extra = f", {hidden} hidden" if hidden else ""
            self.summary.setText(
                f"Regions: {shown} edited in one job{extra}; the prompt above is the rest's."
            )

    def _renamed(self, item: Any) -> None:
        if self._filling or self._layer is None:
            return
        name = item.text().strip()
        if name:
            krita_api.rename_region(self._layer, str(item.data(Qt.ItemDataRole.UserRole)), name)
        self._seen = None  # re-read on the next poll
