"""Windows that never block Krita: messages, questions and a prompt, all non-modal.

A modal dialog (``exec_()``, ``QMessageBox.warning``, ``QInputDialog.getText``) runs a nested event loop on
Krita's GUI thread; with a job's signals arriving meanwhile that is how Krita hangs. These windows are
shown and forgotten: the answer comes back through a callback. They are used only when the docker (which
shows messages and questions itself) is not open.
"""

from typing import Any, Callable, List, Optional

from ..qt import QInputDialog, QMessageBox, Qt

TITLE = "Blended Diffusion"
_open: List[Any] = []  # windows kept referenced while they are shown


def _keep(window: Any) -> Any:
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.setModal(False)
    _open.append(window)
    window.finished.connect(lambda *_: _open.remove(window) if window in _open else None)
    window.show()
    return window


def message(text: str, title: str = TITLE, selectable: bool = False) -> Any:
    """A message window; Krita stays usable while it is open."""
    box = QMessageBox(QMessageBox.Icon.Information, title, text)
    if selectable:
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return _keep(box)


def question(text: str, on_answer: Callable[[bool], Any], title: str = TITLE) -> Any:
    """A Yes / No window: ``on_answer(True)`` when Yes is pressed, ``on_answer(False)`` otherwise."""
    box = QMessageBox(
        QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    )
    yes = box.button(QMessageBox.StandardButton.Yes)
    box.buttonClicked.connect(lambda button: on_answer(button is yes))
    return _keep(box)


def ask_text(
    label: str, on_text: Callable[[str], Any], title: str = TITLE, text: Optional[str] = None
) -> Any:
    """A line of text from the user: ``on_text`` gets it when OK is pressed."""
    dialog = QInputDialog()
    dialog.setWindowTitle(title)
    dialog.setLabelText(label)
    dialog.setTextValue(text or "")
    dialog.textValueSelected.connect(on_text)
    return _keep(dialog)
