"""The worker threads: they reach the engine and run jobs, never touching Krita objects.

Qt (through ``..qt``) only for QThread and its signals, which threads.py delivers on the GUI thread."""

import threading
from typing import Any, Dict, Optional, Union

from .. import doctor, errors, extending
from ..editing import EditRequest, execute
from ..model.jobs import Resolver
from ..qt import QThread, pyqtSignal
from .manager import EngineManager, job_error


def engine_status(manager: Any) -> Dict[str, Any]:
    """The connected engine's status reply, or {} (an engine without one reports no preset)."""
    status = getattr(manager, "status", None)
    return dict(status) if isinstance(status, dict) else {}


class StatusWorker(QThread):
    """Connects to (or starts) the engine only to read its status: device, preset, recommended settings.
    The edit worker reports the same reply, so both land in PluginModel.on_engine_status."""

    engine_status = pyqtSignal(object)  # the status dict
    failed = pyqtSignal(object)  # PluginError

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def run(self) -> None:
        try:
            self.manager.connect().close()
            self.engine_status.emit(engine_status(self.manager))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            self.failed.emit(job_error(exc, "" if self.manager.running else self.manager.log_tail()))


class CheckWorker(StatusWorker):
    """ "Check engine": the engine's report from its status reply; when a local engine cannot start, the
    report of ``python -m engine doctor`` instead (it names missing weights, the device, the log)."""

    reported = pyqtSignal(str)

    def run(self) -> None:
        settings, log_path = self.manager.settings, self.manager.log_path
        try:
            self.manager.connect().close()
        except Exception as exc:  # noqa: BLE001 - the failure is part of the report
            problem = str(job_error(exc, ""))
            text = doctor.compose(settings, log_path, None, problem)
            if settings.mode != "remote":
                text += "\n\n" + doctor.run_local_doctor(settings, log_path)
            self.reported.emit(text)
            return
        status = engine_status(self.manager)
        self.engine_status.emit(status)
        self.reported.emit(doctor.compose(settings, log_path, status))


class EditWorker(QThread):
    """Connects to (or starts) the engine and runs one job; never touches Krita objects."""

    progressed = pyqtSignal(int, int, object)  # step, total, preview PNG bytes or None
    notice = pyqtSignal(str)
    engine_ready = pyqtSignal(str)  # device
    engine_status = pyqtSignal(object)  # the engine's status dict, once connected
    succeeded = pyqtSignal(object)  # EditResponse
    failed = pyqtSignal(object)  # PluginError

    def __init__(
        self,
        request: Union[EditRequest, extending.ExtendRequest],
        manager: EngineManager,
        cancel: threading.Event,
        run_job: Any = execute,
        resolve: Optional[Resolver] = None,
    ) -> None:
        super().__init__()
        self.request, self.manager, self.cancel = request, manager, cancel
        self.run_job = run_job  # editing.execute, or extending.execute for an extension
        # Plain Python, no Qt: the parameters with the engine's recommended values, once it answered.
        self.resolve = resolve

    def run(self) -> None:
        try:
            client = self.manager.connect()
            self.engine_ready.emit(self.manager.device or "")
            status = engine_status(self.manager)
            self.engine_status.emit(status)
            params = self.resolve(status) if self.resolve is not None else None
            if params is not None:
                self.request.params = params
            try:
                response = self.run_job(
                    self.request, client, lambda s, t, p: self.progressed.emit(s, t, p), self.cancel
                )
            finally:
                client.close()
            self.succeeded.emit(response)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            if self.cancel.is_set():
                self.failed.emit(errors.CancelledError())
            else:
                self.failed.emit(job_error(exc, "" if self.manager.running else self.manager.log_tail()))
