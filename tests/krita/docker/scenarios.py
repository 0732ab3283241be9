"""The docker in real Krita, without a window (run INSIDE Krita by tests/krita/scenario_runner.py;
test_krita_docker.py asserts on what it returns): settings persist from the widgets, an edit runs on a worker
thread and fills the candidate list, choosing and Accept work from the buttons, and the dock's size never
changes."""

import json
from typing import Any, Dict

from tests.krita.scenario_tools import PROMPT, digests, photo_doc, select, soft_ellipse, stack


def scenario_docker(engine) -> Dict[str, Any]:
    """The docker and its controller without a window: settings persist from the widgets, an edit runs
    on a worker thread and fills the candidate list, choosing and Accept work from the buttons."""
    import time

    from blended_diffusion import config, krita_api, pixels
    from blended_diffusion.qt import QApplication
    from blended_diffusion.ui import docker

    from tests.krita.fake_engine import FakeManager, dock_size, forbid_modal

    modal = forbid_modal()
    doc = photo_doc()
    krita_api.active_document = lambda: doc  # no view in kritarunner, so no active document
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    messages = ctl.message_log  # what the docker showed: messages and questions, never a dialog
    messages.clear()
    sizes = [dock_size(dock)]  # must never change (docs/troubleshooting.md, "Krita freezes")
    ctl.manager = FakeManager()
    dock.prompt.setText(PROMPT)
    dock.candidates.setValue(3)
    dock.steps.setValue(10)
    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        saved = json.load(handle)
    result: Dict[str, Any] = {"saved_candidates": saved["candidates"], "saved_prompt": saved["prompt"]}
    result["strength_tooltip"] = dock.strength.toolTip()
    dock.removal.setChecked(True)
    result["prompt_enabled_in_removal"] = dock.prompt.isEnabled()
    result["removal_prompt_sent"] = ctl.options_from_settings().prompt
    dock.removal.setChecked(False)
    dock.engine_box.setChecked(True)  # a collapsed (unchecked) group box disables its children
    result["engine_section_shown"] = dock.engine_body.isVisibleTo(dock)
    dock.advanced.setChecked(True)
    sizes.append(dock_size(dock))
    dock.engine_mode.setCurrentText("remote")
    result["host_enabled_remote"] = dock.host.isEnabled()
    result["device_enabled_remote"] = dock.device.isEnabled()
    dock.engine_mode.setCurrentText("local")
    ctl.manager = FakeManager()  # the engine mode change rebuilt nothing, but keep the fake explicit
    before, stack_before = digests(doc), stack(doc.rootNode())
    result["started_without_selection"] = ctl.start_edit(ctl.options_from_settings())
    result["no_selection_messages"] = list(messages)
    result["question_in_docker"] = [dock.question_row.isVisibleTo(dock), dock.status.text()]
    dock.no_button.click()
    result["question_after_no"] = dock.question_row.isVisibleTo(dock)
    result["unchanged_without_selection"] = digests(doc) == before and stack(doc.rootNode()) == stack_before
    select(doc, soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55))
    result["started"] = ctl.start_edit(ctl.options_from_settings())
    result["cancel_enabled_while_busy"] = dock.cancel_button.isEnabled()
    dock._on_progress(1, 3, pixels.encode_png(256, 256, b"\x80" * (256 * 256 * 3), 3))  # a live preview
    ctl.last_message = "a long message that would widen a docker that followed its contents " * 4
    ctl.changed.emit()
    sizes.append(dock_size(dock))
    deadline = time.time() + 60
    while ctl.worker is not None and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    result["state"] = ctl.flow.state
    result["status"] = dock.status.text()
    result["list"] = [dock.list.item(i).text() for i in range(dock.list.count())]
    result["tooltips"] = [dock.list.item(i).toolTip() for i in range(dock.list.count())]
    result["thumbnails"] = [not dock.list.item(i).icon().isNull() for i in range(dock.list.count())]
    result["progress"] = [dock.progress.value(), dock.progress.maximum()]
    sizes.append(dock_size(dock))
    dock.list.setCurrentRow(2)
    result["visible_after_click"] = [n.visible() for n in ctl.outcome.layers]
    dock.accept_button.click()
    result["stack_after_accept"] = stack(doc.rootNode())
    result["list_after_accept"] = dock.list.count()
    result["state_after_accept"] = ctl.flow.state
    sizes.append(dock_size(dock))
    result["sizes"] = sizes
    result["messages"] = list(messages)
    result["modal_calls"] = modal
    doc.setModified(False)
    doc.close()
    return result
