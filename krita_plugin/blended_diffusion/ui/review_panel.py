"""The docker's candidate group: the list with thumbnails, the shown candidate's round, Accept / Discard and
More / Vary (with Vary's strength). Part of docker.py's widget tree: it shows the model's group and calls
the model."""

import weakref
from typing import Any, Dict, Tuple

from .. import extending, naming, workflow
from ..qt import (
    QDoubleSpinBox,
    QHBoxLayout,
    QIcon,
    QImage,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPainter,
    QPixmap,
    QPushButton,
    QSize,
    Qt,
    QVBoxLayout,
    QWidget,
)

THUMB = 72


def rgba_qimage(rgba: bytes, width: int, height: int) -> QImage:
    return QImage(rgba, width, height, 4 * width, QImage.Format.Format_RGBA8888).copy()


class ReviewPanel(QWidget):
    def __init__(self, ctl: Any) -> None:
        super().__init__()
        self.ctl = ctl
        # Thumbnails made once per candidate (a group grows by rounds): id -> (weak reference to the
        # candidate, so an id reused by another object is not taken for it; icon). The group is the model's.
        self._icons: Dict[int, Tuple[Any, QIcon]] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setMinimumHeight(THUMB + 16)
        layout.addWidget(self.list)
        self.round_info = QLabel()
        self.round_info.setWordWrap(True)
        self.round_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.round_info.setToolTip("The round that made the shown candidate: what reproduces it")
        layout.addWidget(self.round_info)
        review = QHBoxLayout()
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Keep the shown candidate as a normal layer; remove the others")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Remove the candidates' group")
        review.addWidget(self.accept_button)
        review.addWidget(self.discard_button)
        layout.addLayout(review)
        rounds_row = QHBoxLayout()
        self.more_button = QPushButton("More")
        self.more_button.setToolTip(
            "The same edit with the next seeds: as many candidates again, added to this group and ranked "
            "with the others; the candidate shown stays shown"
        )
        self.vary_button = QPushButton("Vary")
        self.vary_button.setToolTip(
            "Variations of the shown candidate: a new round starts from its pixels inside the selection, "
            "with the prompt above, at the strength beside; the results join this group"
        )
        self.vary_strength = QDoubleSpinBox()
        self.vary_strength.setRange(0.01, 1.0)
        self.vary_strength.setSingleStep(0.05)
        self.vary_strength.setPrefix("strength ")
        self.vary_strength.setToolTip(
            "Vary's strength: lower keeps more of the candidate's layout and colours, 1.0 starts afresh"
        )
        rounds_row.addWidget(self.more_button)
        rounds_row.addWidget(self.vary_button)
        rounds_row.addWidget(self.vary_strength)
        layout.addLayout(rounds_row)
        self.list.currentRowChanged.connect(self._choose)
        self.accept_button.clicked.connect(ctl.accept)
        self.discard_button.clicked.connect(ctl.discard)
        self.more_button.clicked.connect(lambda: ctl.more())
        self.vary_button.clicked.connect(lambda: ctl.vary())

    def _choose(self, row: int) -> None:
        if row >= 0 and self.ctl.outcome is not None and row != self.ctl.outcome.chosen:
            self.ctl.choose(row)

    def _thumbnail(self, candidate: Any) -> QIcon:
        request = self.ctl.outcome.request
        x, y, w, h = candidate.box
        if isinstance(request, extending.ExtendRequest):  # the old image at its offset on the new canvas
            canvas = QImage(w, h, QImage.Format.Format_RGBA8888)
            canvas.fill(Qt.GlobalColor.transparent)
            painter = QPainter(canvas)
            left, top = request.offset
            painter.drawImage(left, top, rgba_qimage(request.image_rgba, *request.size))
            rx = ry = 0
        else:
            rx, ry, rw, rh = request.region
            canvas = rgba_qimage(request.image_rgba, rw, rh)
            painter = QPainter(canvas)
        painter.drawImage(x - rx, y - ry, rgba_qimage(candidate.rgba, w, h))
        painter.end()
        return QIcon(
            QPixmap.fromImage(
                canvas.scaled(
                    THUMB,
                    THUMB,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
        )

    def refresh(self, idle: bool) -> None:
        """The list from the model's group (thumbnails kept per candidate), buttons by state."""
        ctl = self.ctl
        candidates = ctl.candidates()
        kept = self._icons
        self._icons = {id(c): kept[id(c)] for c in candidates if id(c) in kept and kept[id(c)][0]() is c}
        self.list.blockSignals(True)
        self.list.clear()
        for index, candidate in enumerate(candidates):
            if id(candidate) not in self._icons:
                self._icons[id(candidate)] = (weakref.ref(candidate), self._thumbnail(candidate))
            icon = self._icons[id(candidate)][1]
            item = QListWidgetItem(icon, naming.candidate_name(candidate.rank, candidate.scores))
            tip = naming.candidate_tooltip(candidate.rank, candidate.scores)
            item.setToolTip(tip + "\n" + ctl.outcome.round_of(index))
            self.list.addItem(item)
        if candidates:
            self.list.setCurrentRow(ctl.outcome.chosen)
        self.list.blockSignals(False)
        self.round_info.setText(ctl.selected_round())
        review = bool(candidates) and ctl.flow.state == workflow.REVIEW
        self.accept_button.setEnabled(review)
        self.discard_button.setEnabled(review)
        rounds_ok = review and idle and ctl.outcome.source is not None  # not for an extended canvas
        self.more_button.setEnabled(rounds_ok)
        self.vary_button.setEnabled(rounds_ok)
