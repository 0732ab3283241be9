"""The plugin's one door to Qt: PyQt6 in Krita 6, PyQt5 in Krita 5, the same names for both.

Only this module imports PyQt (tests/test_qt_rule.py keeps that). Krita 6's ``pykrita.qt_major_version()``
says which binding Krita itself was built with; Krita 5 has no such function, and there PyQt6 must never
be imported (the distribution may ship it, and loading a second Qt into Krita 5 crashes it). Outside Krita
(tools, unit tests) PyQt5 is tried first, then PyQt6.

Write enum values by their scoped names (``Qt.AlignmentFlag.AlignCenter``): PyQt6 has only those, and
PyQt5 5.15 accepts them too.
"""

from typing import Optional


def krita_qt_major() -> Optional[int]:
    """The Qt major version of the Krita we run in, or None outside Krita (or in a Krita that doesn't say,
    i.e. Krita 5)."""
    try:
        import pykrita  # Krita's embedded module
    except ImportError:
        return None
    ask = getattr(pykrita, "qt_major_version", None)
    return int(ask()) if ask is not None else 5


def _binding_major() -> int:
    major = krita_qt_major()
    if major is not None:
        return 6 if major >= 6 else 5
    try:
        import PyQt5  # noqa: F401
    except ImportError:
        return 6
    return 5


QT_MAJOR = _binding_major()

if QT_MAJOR == 6:
    from PyQt6 import QtCore, QtGui, QtWidgets
else:
    from PyQt5 import QtCore, QtGui, QtWidgets  # type: ignore[no-redef]

# QtCore
Qt = QtCore.Qt
QBuffer = QtCore.QBuffer
QByteArray = QtCore.QByteArray
QCoreApplication = QtCore.QCoreApplication
QIODevice = QtCore.QIODevice
QObject = QtCore.QObject
QSize = QtCore.QSize
QThread = QtCore.QThread
QTimer = QtCore.QTimer
pyqtSignal = QtCore.pyqtSignal

# QtGui
QIcon = QtGui.QIcon
QImage = QtGui.QImage
QPainter = QtGui.QPainter
QPixmap = QtGui.QPixmap

# QtWidgets
QApplication = QtWidgets.QApplication
QCheckBox = QtWidgets.QCheckBox
QComboBox = QtWidgets.QComboBox
QDoubleSpinBox = QtWidgets.QDoubleSpinBox
QFormLayout = QtWidgets.QFormLayout
QFrame = QtWidgets.QFrame
QGroupBox = QtWidgets.QGroupBox
QHBoxLayout = QtWidgets.QHBoxLayout
QInputDialog = QtWidgets.QInputDialog
QLabel = QtWidgets.QLabel
QLineEdit = QtWidgets.QLineEdit
QListWidget = QtWidgets.QListWidget
QListWidgetItem = QtWidgets.QListWidgetItem
QMessageBox = QtWidgets.QMessageBox
QProgressBar = QtWidgets.QProgressBar
QPushButton = QtWidgets.QPushButton
QScrollArea = QtWidgets.QScrollArea
QSpinBox = QtWidgets.QSpinBox
QVBoxLayout = QtWidgets.QVBoxLayout
QWidget = QtWidgets.QWidget
QDockWidget = QtWidgets.QDockWidget
QDialog = QtWidgets.QDialog
