"""The "Blended Diffusion" docker: prompt (with its history) and options, progress with Cancel, live
preview, messages and questions, the candidate group (review_panel.py).

Top to bottom: prompt, the edit's options form (new options of an edit go in that form), defaults line,
mode checkboxes, Advanced, Extend canvas, Edit / Cancel, progress, preview, the candidate group (list,
round line, Accept / Discard, More / Vary), Engine, status and question, Check engine."""

from typing import Any, Iterable, Optional

from .. import extending, krita_api, recommended
from ..estimate import Remaining
from ..krita_api import DockWidget
from ..params import MAX_CANDIDATES, guided_steps, mode_sets_schedule
from ..qt import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPixmap,
    QProgressBar,
    QPushButton,
    QSpinBox,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
)
from ..session import model
from .binding import signals_of
from .engine_section import EngineSection, ModelBox
from .regions_panel import RegionsPanel
from .review_panel import THUMB, ReviewPanel
from .steady_area import SteadyArea

DOCKER_ID = "blended_diffusion_docker"
# Krita sends no signal when the selection or the layers change: the layer's regions (names, no pixels)
# and the selection's bounds (while the detail stage's added time is shown) are polled this often.
SELECTION_POLL_MS = 1000
ENGINE_KEYS = (
    "engine_mode",
    "device",
    "remote_host",
    "remote_port",
    "remote_token",
    "remote_fingerprint",
    "models",
)

STRENGTH_TIP = (
    "How much the selected area may change. Strength s skips the first (1 - s) x steps of the diffusion "
    "(skip_timesteps): 1.0 starts from pure noise, 0.75 with 100 steps skips 25 (the paper's default), "
    "lower values keep more of the original colours and layout."
)


class BlendedDiffusionDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Blended Diffusion")
        self.ctl = model()  # the plugin's model (scripts and tests reach it as dock.ctl)
        self.ctl.attach_view(self.isVisible)
        self._loading = False
        root = QWidget(self)
        layout = QVBoxLayout(root)

        # The prompt: an editable drop-down of the recent prompts (kept with the settings), and Clear.
        self.prompt_box = QComboBox()
        self.prompt_box.setEditable(True)
        self.prompt_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.prompt_box.setToolTip("The prompt; the arrow lists recent prompts")
        self.prompt = self.prompt_box.lineEdit()
        self.prompt.setPlaceholderText(
            "Describe what the selection should show, e.g. 'a red hot air balloon'"
        )
        self.clear_history = QPushButton("Clear")
        self.clear_history.setToolTip("Forget the recent prompts")
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_box, 1)
        prompt_row.addWidget(self.clear_history)
        self.removal = QCheckBox("Removal (empty prompt: fill the selection from its surroundings)")
        layout.addLayout(prompt_row)
        layout.addWidget(self.removal)

        # The edit's options. New options of an edit go into this form, one row each.
        form = QFormLayout()
        self.candidates = QSpinBox()
        self.candidates.setRange(1, 16)
        self.candidates.setToolTip(
            "How many results to make; they are ranked by how well CLIP finds they match the prompt."
        )
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.01, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setToolTip(STRENGTH_TIP)
        self.seed_mode = QComboBox()
        self.seed_mode.addItems(["random", "fixed"])
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_mode)
        seed_row.addWidget(self.seed)
        form.addRow("Candidates", self.candidates)
        form.addRow("Strength", self.strength)
        form.addRow("Seed", seed_row)
        self.quality = QComboBox()
        self.quality.addItems(["paper", "balanced", "fast"])
        self.quality.setToolTip(
            "paper: the paper's settings. balanced: 4/5 of the steps, CLIP guidance on the clean estimate "
            "(no backward pass through the UNet), about 0.31 of paper's cost; in the toy world 4 points "
            "less guided colour than paper (target: within 2) and 17 less colour-and-shape (target: 5), the "
            "best candidate as good. fast: 3/10 of the steps, the same guidance, about 0.11 of the cost; 51 "
            "points less colour (target: 5) and 49 less colour-and-shape (target: 10). "
            "Measured in docs/performance.md."
        )
        self.model = ModelBox()
        form.addRow("Model", self.model)
        form.addRow("Quality", self.quality)
        self.detail = QComboBox()
        self.detail.addItems(["off", "auto", "on"])
        self.detail.setToolTip(
            "Full-resolution detail: after the edit at the model's size, re-sample each candidate at the "
            "document's resolution (sharp edges in a big selection). Its time grows with the selection's "
            "area; auto runs it only when that costs less than the edit itself (the engine says so in its "
            "notes). Pixels outside the selection stay exactly as they are."
        )
        form.addRow("Full-resolution detail", self.detail)
        layout.addLayout(form)
        # Where steps, guidance, candidates and strength come from (the engine preset's recommendation or
        # the reference's), which of them are the user's, and a button that takes the preset's again.
        defaults_row = QHBoxLayout()
        self.defaults_note = QLabel()
        self.defaults_note.setWordWrap(True)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip(
            "Set candidates, strength, steps, augmentations and guidance scale to the engine preset's "
            "recommended values (the reference's when the preset recommends none)."
        )
        defaults_row.addWidget(self.defaults_note, 1)
        defaults_row.addWidget(self.reset_button)
        layout.addLayout(defaults_row)
        self.time_estimate = QLabel()
        layout.addWidget(self.time_estimate)
        self.remaining = Remaining()
        self.scribble = QCheckBox("Scribble guide (strokes on the paint layer above)")
        self.scribble.setToolTip(
            "Paint rough shapes and colours on a paint layer directly above the edited layer: the visible "
            "image starts the diffusion, so the result follows your strokes."
        )
        self.background = QCheckBox("Replace background (edit outside the selection)")
        layout.addWidget(self.scribble)
        layout.addWidget(self.background)

        self.advanced = QGroupBox("Advanced")
        self.advanced.setCheckable(True)
        self.advanced_body = QWidget()
        QVBoxLayout(self.advanced).addWidget(self.advanced_body)
        adv = QFormLayout(self.advanced_body)
        self.steps = QSpinBox()
        self.steps.setRange(2, 1000)
        self.steps.setToolTip("timestep_respacing: diffusion steps of the whole schedule (reference: 100)")
        self.aug_num = QSpinBox()
        self.aug_num.setRange(1, 64)
        self.aug_num.setToolTip("Augmented copies CLIP sees each step (reference: 8)")
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 100000.0)
        self.guidance.setDecimals(0)
        self.guidance.setSingleStep(100)
        self.guidance.setToolTip("clip_guidance_lambda (reference: 1000)")
        self.baseline = QCheckBox("Algorithm 1 baseline (local CLIP guidance + background loss)")
        self.ddim = QCheckBox("DDIM sampling (faster, eta 0)")
        self.live_preview = QCheckBox("Live preview")
        adv.addRow("Steps", self.steps)
        adv.addRow("Augmentations", self.aug_num)
        adv.addRow("Guidance scale", self.guidance)
        adv.addRow(self.baseline)
        adv.addRow(self.ddim)
        adv.addRow(self.live_preview)
        layout.addWidget(self.advanced)

        self.extend_box = QGroupBox("Extend canvas")
        self.extend_box.setCheckable(True)
        self.extend_body = QWidget()
        QVBoxLayout(self.extend_box).addWidget(self.extend_body)
        ext = QFormLayout(self.extend_body)
        self.extend_pixels = {}
        self.extend_prompts = {}
        for side in extending.SIDES:
            pixels_box = QSpinBox()
            pixels_box.setRange(0, extending.MAX_SIDE)
            pixels_box.setSuffix(" px")
            pixels_box.setToolTip(f"Pixels to add on the {side} (0: this side stays)")
            side_prompt = QLineEdit()
            side_prompt.setPlaceholderText("the prompt above")
            side_prompt.setToolTip(f"What the new {side} area should show (empty: the main prompt)")
            row = QHBoxLayout()
            row.addWidget(pixels_box)
            row.addWidget(side_prompt, 1)
            ext.addRow(side.capitalize(), row)
            self.extend_pixels[side], self.extend_prompts[side] = pixels_box, side_prompt
        self.extend_button = QPushButton("Extend canvas with text")
        self.extend_button.setToolTip(
            "Grow the canvas and fill the new area from the prompts; Discard takes the canvas back"
        )
        ext.addRow(self.extend_button)
        layout.addWidget(self.extend_box)

        self.regions = RegionsPanel()  # the layer's selection masks as regions, each with its prompt
        layout.addWidget(self.regions)

        buttons = QHBoxLayout()
        self.edit_button = QPushButton("Edit with text")
        self.cancel_button = QPushButton("Cancel")
        buttons.addWidget(self.edit_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("step %v / %m")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(THUMB)
        layout.addWidget(self.preview)

        self.review = ReviewPanel(self.ctl)
        self.list = self.review.list  # the names scripts and tests use
        self.accept_button, self.discard_button = self.review.accept_button, self.review.discard_button
        self.more_button, self.vary_button = self.review.more_button, self.review.vary_button
        layout.addWidget(self.review)

        self.engine_box = EngineSection()
        self.engine_body = self.engine_box.body
        section = self.engine_box  # the names scripts and tests use
        self.engine_mode, self.device, self.host = section.mode, section.device, section.host
        self.port, self.token, self.fingerprint = section.port, section.token, section.fingerprint
        layout.addWidget(self.engine_box)

        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        # A question in the docker (never a modal dialog): its text is in the status line above.
        self.question_row = QWidget()
        question = QHBoxLayout(self.question_row)
        question.setContentsMargins(0, 0, 0, 0)
        self.yes_button = QPushButton("Yes")
        self.no_button = QPushButton("No")
        question.addStretch(1)
        question.addWidget(self.yes_button)
        question.addWidget(self.no_button)
        self.question_row.setVisible(False)
        layout.addWidget(self.question_row)
        # Outside the collapsible Engine section: it is most needed when nothing works yet.
        self.check_button = QPushButton("Check engine")
        self.check_button.setToolTip(
            "Report the engine's Python and versions, device and memory, preset and weight files, the "
            "estimated time of an edit and where its log is"
        )
        check_row = QHBoxLayout()
        check_row.addStretch(1)
        check_row.addWidget(self.check_button)
        layout.addLayout(check_row)
        layout.addStretch(1)

        self.load_history()
        self.load_settings()
        self.advanced.setChecked(False)
        self.engine_box.setChecked(False)
        self.extend_box.setChecked(False)
        self.setWidget(SteadyArea(root, (self.extend_body, self.advanced_body, self.engine_body)))
        self._connect()
        self.refresh()

    # ---------------------------------------------------------- settings <-> widgets

    def _bindings(self):
        return (
            ("prompt", self.prompt, "text", "setText", self.prompt.textChanged),
            ("removal", self.removal, "isChecked", "setChecked", self.removal.toggled),
            ("candidates", self.candidates, "value", "setValue", self.candidates.valueChanged),
            ("strength", self.strength, "value", "setValue", self.strength.valueChanged),
            ("seed_mode", self.seed_mode, "currentText", "setCurrentText", self.seed_mode.currentTextChanged),
            ("seed", self.seed, "value", "setValue", self.seed.valueChanged),
            ("scribble", self.scribble, "isChecked", "setChecked", self.scribble.toggled),
            ("background", self.background, "isChecked", "setChecked", self.background.toggled),
            ("steps", self.steps, "value", "setValue", self.steps.valueChanged),
            ("aug_num", self.aug_num, "value", "setValue", self.aug_num.valueChanged),
            ("guidance_scale", self.guidance, "value", "setValue", self.guidance.valueChanged),
            ("baseline", self.baseline, "isChecked", "setChecked", self.baseline.toggled),
            ("ddim", self.ddim, "isChecked", "setChecked", self.ddim.toggled),
            ("live_preview", self.live_preview, "isChecked", "setChecked", self.live_preview.toggled),
            (
                "vary_strength",
                self.review.vary_strength,
                "value",
                "setValue",
                self.review.vary_strength.valueChanged,
            ),
            ("quality", self.quality, "currentText", "setCurrentText", self.quality.currentTextChanged),
            ("detail", self.detail, "currentText", "setCurrentText", self.detail.currentTextChanged),
            (
                "engine_mode",
                self.engine_mode,
                "currentText",
                "setCurrentText",
                self.engine_mode.currentTextChanged,
            ),
            ("device", self.device, "text", "setText", self.device.textChanged),
            ("remote_host", self.host, "text", "setText", self.host.textChanged),
            ("remote_port", self.port, "value", "setValue", self.port.valueChanged),
            ("remote_token", self.token, "text", "setText", self.token.textChanged),
            ("remote_fingerprint", self.fingerprint, "text", "setText", self.fingerprint.textChanged),
            *self._extend_bindings(),
        )

    def _extend_bindings(self):
        bindings = []
        for side in extending.SIDES:
            spin, line = self.extend_pixels[side], self.extend_prompts[side]
            bindings.append((f"extend_{side}", spin, "value", "setValue", spin.valueChanged))
            bindings.append((f"extend_prompt_{side}", line, "text", "setText", line.textChanged))
        return bindings

    def load_settings(self, keys: Optional[Iterable[str]] = None) -> None:
        """Settings -> widgets (all, or only ``keys``: a line edit being typed in keeps its cursor)."""
        wanted = None if keys is None else set(keys)
        self._loading = True
        for key, widget, _getter, setter, _signal in self._bindings():
            if wanted is None or key in wanted:
                getattr(widget, setter)(self.ctl.settings.get(key))
        self._loading = False
        self._update_enabled()

    def load_history(self) -> None:
        """The prompt field's drop-down from the remembered prompts (the text being typed stays)."""
        self._loading = True
        text = self.prompt.text()
        self.prompt_box.clear()
        self.prompt_box.addItems(self.ctl.settings.prompt_history)
        self.prompt_box.setCurrentIndex(-1)
        self.prompt.setText(text)
        self.clear_history.setEnabled(bool(self.ctl.settings.prompt_history))
        self._loading = False

    def _store(self, key: str, widget: Any, getter: str) -> None:
        if self._loading:
            return
        try:
            self.ctl.settings.set(key, getattr(widget, getter)())
            self.ctl.settings.mark_changed(key)  # only the preset's keys are tracked
            self.ctl.settings.save()
        except (ValueError, OSError) as exc:
            self.status.setText(f"Setting not saved: {exc}")
        if key in ENGINE_KEYS:
            self.ctl.apply_engine_settings()
        self._update_enabled()

    def _connect(self) -> None:
        for key, widget, getter, _setter, signal in self._bindings():
            signal.connect(lambda *_args, k=key, w=widget, g=getter: self._store(k, w, g))
        # Checkable group boxes work as collapsible sections.
        self.advanced.toggled.connect(self.advanced_body.setVisible)
        self.engine_box.toggled.connect(self.engine_body.setVisible)
        self.extend_box.toggled.connect(self.extend_body.setVisible)
        self.extend_button.clicked.connect(
            lambda: self.ctl.start_extend(self.ctl.options_from_settings(), *self.ctl.extend_settings())
        )
        self.model.currentIndexChanged.connect(lambda _index: self._store("models", self.model, "chosen"))
        self.edit_button.clicked.connect(lambda: self.ctl.start_edit(self.ctl.options_from_settings()))
        self.reset_button.clicked.connect(self.ctl.reset_to_recommended)
        self.check_button.clicked.connect(self.ctl.check_engine)
        self.cancel_button.clicked.connect(self.ctl.cancel)
        self.clear_history.clicked.connect(self.ctl.clear_prompt_history)
        self.yes_button.clicked.connect(lambda: self.ctl.answer(True))
        self.no_button.clicked.connect(lambda: self.ctl.answer(False))
        signals = signals_of(self.ctl)
        signals.changed.connect(self.refresh)
        signals.progressed.connect(self._on_progress)
        signals.settings_loaded.connect(self.load_settings)
        signals.history_changed.connect(self.load_history)
        self._selection_seen: Any = None
        self._selection_poll = QTimer(self)
        self._selection_poll.setInterval(SELECTION_POLL_MS)
        self._selection_poll.timeout.connect(self._poll_selection)
        self._selection_poll.start()

    def _update_enabled(self) -> None:
        self.defaults_note.setText(recommended.summary(self.ctl.settings))
        self.prompt.setEnabled(not self.removal.isChecked())
        self.seed.setEnabled(self.seed_mode.currentText() == "fixed")
        remote = self.engine_mode.currentText() == "remote"
        for widget in (self.host, self.port, self.token, self.fingerprint):
            widget.setEnabled(remote)
        self.device.setEnabled(not remote)
        self._update_estimate()

    # ---------------------------------------------------------- state -> widgets

    def _poll_selection(self) -> None:
        """Follow the layer's regions; refresh the estimate when the selection's bounds changed (only while
        the figure depends on it)."""
        if not self.isVisible():
            return
        self.regions.poll()
        if self.ctl.options_from_settings().detail == "off":
            return
        if krita_api.selection_extent() != self._selection_seen:
            self._update_estimate()

    def _update_estimate(self) -> None:
        options = self.ctl.options_from_settings()
        steps = guided_steps(options) if options.prompt else None
        selection = krita_api.selection_extent() if options.detail != "off" else None
        self._selection_seen = selection
        if selection is not None and options.background:  # the edit is everything outside the selection
            selection = ((0, 0, selection[1], selection[2]), selection[1], selection[2])
        self.time_estimate.setText(
            self.ctl.estimates.text(
                options.quality,
                options.candidates,
                steps,
                options.detail,
                selection,
                int(options.steps),
                mode_sets_schedule(options),
            )
        )

    def _on_progress(self, step: int, total: int, preview: Optional[bytes]) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(step)
            left = self.remaining.text(step, total)
            self.progress.setFormat("step %v / %m" + (f", {left}" if left else ""))
        if preview:
            pixmap = QPixmap()
            if pixmap.loadFromData(preview):
                self.preview.setPixmap(
                    pixmap.scaled(THUMB * 3, THUMB * 3, Qt.AspectRatioMode.KeepAspectRatio)
                )

    def _apply_limits(self) -> None:
        """The connected engine's limits (bridge/limits.py, from its status) as the boxes' maxima."""
        limits = self.ctl.engine_limits
        self.candidates.setMaximum(min(MAX_CANDIDATES, limits.max_candidates))
        self.steps.setMaximum(min(1000, limits.max_steps))
        self.aug_num.setMaximum(min(64, limits.max_aug_num))
        for box in self.extend_pixels.values():
            box.setMaximum(limits.max_extend_side)

    def refresh(self) -> None:
        flow = self.ctl.flow
        busy = self.ctl.worker is not None
        if not busy:
            self.remaining.reset()
            self.progress.setFormat("step %v / %m")
        self._update_estimate()
        self._apply_limits()
        remote = self.ctl.settings.get("engine_mode") == "remote"
        status = getattr(self.ctl.manager, "status", None)
        self.model.fill(status if isinstance(status, dict) else {}, self.ctl.settings.get("models"), remote)
        idle = not busy and self.ctl.status_worker is None
        self.edit_button.setEnabled(idle)
        self.extend_button.setEnabled(idle)
        self.check_button.setEnabled(idle)
        self.defaults_note.setText(recommended.summary(self.ctl.settings))
        self.cancel_button.setEnabled(busy)
        self.review.refresh(idle)
        text = flow.status_text()
        question = self.ctl.question
        message = question.text if question is not None else self.ctl.last_message
        if message:
            text += "\n" + message
        self.status.setText(text)
        # Errors stand out; they stay until the next job or message (no dialog to dismiss).
        self.status.setStyleSheet("color: #d04040;" if self.ctl.message_is_error and not question else "")
        self.question_row.setVisible(question is not None)

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's API name
        pass
