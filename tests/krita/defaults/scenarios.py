"""Scenarios for the engine preset's recommended settings, run INSIDE real Krita (by
tests/krita/scenario_runner.py; test_krita_defaults.py runs each in a Krita of its own, the settings file in
the test HOME carrying over between them, as across restarts).

``first``: a fresh docker, one edit on the real engine (the preset the test's engine.json names), the
user changes the steps. ``restart``: a new session shows what was kept, Reset, a user value, then the
engine (now started with another preset) is asked for its status.
"""

import json
import threading
import time
from typing import Any, Dict, List

VALUES = ("candidates", "strength", "steps", "guidance", "aug_num")
SENT = (
    "timestep_respacing",
    "skip_timesteps",
    "clip_guidance_lambda",
    "aug_num",
    "batch_size",
    "iterations_num",
)


MODAL: List[str] = []  # modal calls the plugin made (forbid_modal): reported with the messages


def setup() -> Any:
    """The docker, without a window; message boxes are recorded instead of shown."""
    from blended_diffusion.ui import docker

    from tests.krita.fake_engine import forbid_modal

    MODAL.clear()
    forbid_modal(MODAL)  # a modal call is listed with the messages, which the tests expect empty
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    ctl.message_log.clear()
    messages = ctl.message_log
    ctl.status_threads = []
    handle = ctl.on_engine_status

    def on_engine_status(*args: Any) -> None:
        # The reply comes from a worker thread; widgets may only be touched on the GUI thread.
        ctl.status_threads.append(threading.current_thread() is threading.main_thread())
        handle(*args)

    ctl.on_engine_status = on_engine_status
    return dock, messages


def values(dock) -> Dict[str, Any]:
    return {name: getattr(dock, name).value() for name in VALUES}


def saved() -> Dict[str, Any]:
    from blended_diffusion import config

    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        return json.load(handle)


def wait_idle(ctl, seconds: float = 300) -> None:
    from blended_diffusion.qt import QApplication

    deadline = time.time() + seconds
    while (ctl.worker is not None or ctl.status_worker is not None) and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def scenario_first(_engine=None) -> Dict[str, Any]:
    from blended_diffusion import krita_api
    from krita import Krita, Selection

    dock, messages = setup()
    ctl = dock.ctl
    result: Dict[str, Any] = {"before": values(dock), "note_before": dock.defaults_note.text()}
    doc = Krita.instance().createDocument(64, 64, "defaults", "RGBA", "U8", "", 72.0)
    krita_api.active_document = lambda: doc  # no view in kritarunner, so no active document
    selection = Selection()
    selection.select(20, 20, 24, 24, 255)
    doc.setSelection(selection)
    dock.prompt.setText("a red circle")
    result["started"] = ctl.start_edit(ctl.options_from_settings())
    wait_idle(ctl)
    outcome = ctl.outcome
    result["state"] = ctl.flow.state
    result["sent"] = {key: outcome.request.params[key] for key in SENT} if outcome else None
    result["after"] = values(dock)
    result["note_after"] = dock.defaults_note.text()
    result["layer_names"] = outcome.names if outcome else []
    result["list"] = [dock.list.item(i).text() for i in range(dock.list.count())]
    result["tooltips"] = [dock.list.item(i).toolTip() for i in range(dock.list.count())]
    result["scores"] = [c.scores for c in outcome.response.candidates] if outcome else []
    dock.discard_button.click()
    dock.steps.setValue(30)  # the user's own value
    result["note_user"] = dock.defaults_note.text()
    result["saved"] = saved()
    result["messages"] = list(messages) + MODAL
    result["status_on_gui_thread"] = ctl.status_threads
    ctl.shutdown()
    doc.setModified(False)
    doc.close()
    return result


def scenario_restart(_engine=None) -> Dict[str, Any]:
    dock, messages = setup()
    ctl = dock.ctl
    result: Dict[str, Any] = {"restored": values(dock), "note_restored": dock.defaults_note.text()}
    dock.reset_button.click()
    result["after_reset"] = values(dock)
    result["saved_after_reset"] = saved()
    dock.guidance.setValue(700)  # the user's own value, kept when the preset changes
    result["read_started"] = ctl.read_engine_status()
    wait_idle(ctl)
    result["after_status"] = values(dock)
    result["note_after_status"] = dock.defaults_note.text()
    result["saved_after_status"] = saved()
    result["check_enabled"] = dock.check_button.isEnabled()
    dock.check_button.click()  # "Check engine" on the running engine
    result["check_busy"] = not dock.check_button.isEnabled() and ctl.status_worker is not None
    wait_idle(ctl)
    result["report"] = ctl.last_report
    result["messages"] = list(messages) + MODAL
    result["status_on_gui_thread"] = ctl.status_threads
    ctl.shutdown()
    return result


def scenario_check_missing(_engine=None) -> Dict[str, Any]:
    """ "Check engine" when the local engine cannot start (the default preset, no weights downloaded)."""
    dock, messages = setup()
    ctl = dock.ctl
    started = ctl.check_engine()
    wait_idle(ctl)
    result = {"started": started, "report": ctl.last_report, "messages": list(messages) + MODAL}
    ctl.shutdown()
    return result
