"""A scroll area whose size hints never change after the docker is built (see SteadyArea)."""

from ..qt import QFrame, QScrollArea, QSize, QWidget


class SteadyArea(QScrollArea):
    """Holds the docker's contents with size hints fixed when the docker is built.

    Nothing the docker shows later (live preview, candidate list, messages, expanded sections) can then
    change the dock's size, so the plugin never resizes Krita's canvas. A canvas resized while Krita 5.1's
    status-bar progress bar appears deadlocks Krita (docs/troubleshooting.md, "Krita freezes")."""

    def __init__(self, content: QWidget, sections: "tuple[QWidget, ...]" = ()) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        bar = self.verticalScrollBar().sizeHint().width()
        for section in sections:  # wide enough for every section expanded, tall enough for none
            section.setVisible(False)
        collapsed = content.minimumSizeHint()
        for section in sections:
            section.setVisible(True)
        width = content.minimumSizeHint().width() + bar
        for section in sections:
            section.setVisible(False)
        self.setWidget(content)
        self._minimum = QSize(width, collapsed.height())
        self._hint = QSize(max(width, content.sizeHint().width() + bar), content.sizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self._hint)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self._minimum)
