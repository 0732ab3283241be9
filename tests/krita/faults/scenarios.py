"""Faults staged INSIDE real Krita by kritarunner; test_krita_faults.py starts them and checks from outside
(each fault ends or kills its Krita, so each runs in a Krita of its own, not the session runner's)::

    kritarunner -s tests.krita.faults.scenarios <result.json> <scenario>

* ``job_then_wait``: an edit runs on the real engine through the docker's controller (as the Edit button
  starts it); once progress arrives the pids go to ``<result.json>``, then Krita keeps running until the
  test kills it.
* ``job_then_quit``: the same, then Krita quits in order while the job runs (Krita's applicationClosing
  signal, which the controller listens to, then Krita's exit).
* ``doc_closed``: the document is closed while a slow (fake) job runs; the result must be dropped with a
  message and no exception.
"""

import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Dict, List

from tests.krita.scenario_tools import PROMPT, app, select, soft_ellipse

LONG_JOB = dict(candidates=1, steps=400, strength=1.0, aug_num=1, seed=5)


def _write(path: str, data: Dict[str, Any]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(path + ".tmp", path)  # the test polls for the file: it appears whole


def _pump(until, limit: float) -> bool:
    """Run Krita's event loop until ``until()`` or ``limit`` seconds (kritarunner has no loop running)."""
    from blended_diffusion.qt import QApplication

    deadline = time.time() + limit
    while time.time() < deadline:
        QApplication.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return False


def _start_long_job(result_path: str, write: bool = True) -> Any:
    from blended_diffusion import krita_api, session
    from blended_diffusion.params import EditOptions

    doc = app().createDocument(64, 64, "fault", "RGBA", "U8", "", 72.0)
    select(doc, soft_ellipse(64, 64, 32, 32, 20, 20))
    krita_api.active_document = lambda: doc  # no view in kritarunner
    ctl = session.model()
    ctl.connect_application_closing()
    steps: List[int] = []
    ctl.progressed.connect(lambda step, total, preview: steps.append(step))
    options = EditOptions(prompt=PROMPT, preview_every=0, **LONG_JOB)
    if not ctl.start_edit(options):
        raise RuntimeError(f"the edit did not start: {ctl.last_message}")
    if not _pump(lambda: bool(steps), 300):
        raise RuntimeError(f"no progress from the engine: {ctl.flow.state} {ctl.last_message}")
    ctl.pids = {"krita": os.getpid(), "engine": ctl.manager._process.pid, "step": steps[-1]}
    if write:
        _write(result_path, ctl.pids)
    return ctl


def job_then_wait(result_path: str) -> None:
    _start_long_job(result_path)
    _pump(lambda: False, 600)  # the test kills Krita long before


def job_then_quit(result_path: str) -> None:
    ctl = _start_long_job(result_path, write=False)
    data = dict(ctl.pids, busy=ctl.worker is not None)
    # What Krita does when the user quits (File > Quit, closing the window): its notifier says
    # applicationClosing, which the plugin's controller listens to; then Krita exits (here: kritarunner
    # returns) with the job still running.
    started = time.time()
    app().notifier().applicationClosing.emit()
    data.update(
        closing_s=round(time.time() - started, 2),
        worker_left=ctl.worker is not None and ctl.worker.isRunning(),
        engine_running=ctl.manager.running,
    )
    _pump(lambda: ctl.worker is None, 5)  # Krita's event loop runs on while its windows close
    data.update(worker_released=ctl.worker is None)
    _write(result_path, data)


def doc_closed(result_path: str) -> None:
    from blended_diffusion import krita_api, session
    from blended_diffusion.qt import QMessageBox

    from tests.krita.fake_engine import FakeManager
    from tests.krita.scenario_tools import photo_doc

    messages: List[str] = []
    QMessageBox.warning = staticmethod(lambda *a, **k: messages.append(a[2]) or QMessageBox.StandardButton.Ok)
    exceptions: List[str] = []
    sys.excepthook = lambda kind, value, tb: exceptions.append(
        "".join(traceback.format_exception(kind, value, tb))
    )
    threading.excepthook = lambda args: exceptions.append(repr(args.exc_value))
    doc = photo_doc()
    select(doc, soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55))
    krita_api.active_document = lambda: doc
    ctl = session.model()
    ctl.manager = FakeManager(step_delay=0.5)
    documents_before = len(app().documents())
    started = ctl.start_edit(ctl.options_from_settings())
    busy_when_closed = ctl.worker is not None
    doc.setModified(False)
    doc.close()
    finished = _pump(lambda: ctl.worker is None, 60)
    _pump(lambda: False, 0.5)  # queued signals after the thread ended
    _write(
        result_path,
        {
            "started": started,
            "busy_when_closed": busy_when_closed,
            "finished": finished,
            "state": ctl.flow.state,
            "message": ctl.last_message,
            "dialogs": messages,
            "exceptions": exceptions,
            "outcome": ctl.outcome is not None,
            "documents_closed": documents_before - len(app().documents()),
            "can_edit_again": ctl.flow.can_edit,
        },
    )


SCENARIOS = {"job_then_wait": job_then_wait, "job_then_quit": job_then_quit, "doc_closed": doc_closed}


def __main__(args):
    result_path, name = list(args)
    try:
        SCENARIOS[name](result_path)
    except Exception as exc:  # noqa: BLE001 - reported to pytest
        error = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        _write(result_path + ".error", error)
