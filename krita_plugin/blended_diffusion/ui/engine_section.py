"""The docker's Engine section (local or remote engine, device, host, port, token, TLS fingerprint) and its
Model choice (the engine's installed presets by method, models_choice.py): widgets only; the docker binds
them to the settings."""

from typing import Any, List, Mapping

from ..models_choice import ModelChoice, choices, current
from ..qt import QComboBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox, Qt, QVBoxLayout, QWidget

MODEL_TIP = (
    "The models the engine edits with. Blended Diffusion (paper): the paper's method, ADM + CLIP guidance. "
    "Blended Latent Diffusion: the authors' successor on Stable Diffusion, many times faster a candidate. "
    "Only presets whose files are installed are listed; a local engine restarts with the one you pick."
)


class EngineSection(QGroupBox):
    def __init__(self) -> None:
        super().__init__("Engine")
        self.setCheckable(True)
        self.body = QWidget()
        QVBoxLayout(self).addWidget(self.body)
        form = QFormLayout(self.body)
        self.mode = QComboBox()
        self.mode.addItems(["local", "remote"])
        self.mode.setToolTip("local: start the engine install.py set up; remote: connect to host:port")
        self.device = QLineEdit()
        self.device.setPlaceholderText("auto (cuda / mps / cpu)")
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.fingerprint = QLineEdit()
        self.fingerprint.setPlaceholderText("TLS: SHA-256 printed by 'engine serve --tls'")
        self.fingerprint.setToolTip(
            "The fingerprint 'python -m engine serve --tls' prints. Set, the connection is encrypted and "
            "the plugin refuses an engine whose certificate does not match, before sending the token. "
            "Empty: no encryption (use it on loopback or through an SSH tunnel only)."
        )
        form.addRow("Mode", self.mode)
        form.addRow("Device", self.device)
        form.addRow("Host", self.host)
        form.addRow("Port", self.port)
        form.addRow("Token", self.token)
        form.addRow("Fingerprint", self.fingerprint)


class ModelBox(QComboBox):
    """The Model drop-down: filled from the engine's status; ``itemData`` is the preset's name."""

    def __init__(self) -> None:
        super().__init__()
        self.setToolTip(MODEL_TIP)
        self.shown: List[ModelChoice] = []
        self.setEnabled(False)

    def fill(self, status: Mapping[str, Any], saved: str, remote: bool) -> None:
        """Rebuild when the list changed (no signal is sent: the caller blocks nothing else)."""
        found = choices(status)
        selected = current(status, saved)
        if found != self.shown or self.chosen() != (selected or ""):
            self.blockSignals(True)
            self.clear()
            for choice in found:
                self.addItem(choice.label, choice.name)
                self.setItemData(self.count() - 1, choice.tooltip, Qt.ItemDataRole.ToolTipRole)
            index = self.findData(selected) if selected else -1
            if index < 0 and selected:
                self.addItem(f"{selected} — not installed here", selected)
                index = self.count() - 1
            self.setCurrentIndex(index)
            self.blockSignals(False)
            self.shown = found
        # A remote engine runs the preset its host started it with.
        self.setEnabled(bool(found) and not remote)

    def chosen(self) -> str:
        """The preset shown ('' when none is: the engine's own)."""
        data = self.currentData()
        return data if isinstance(data, str) else ""
