"""Starting, reusing, restarting and stopping the engine, or connecting to a remote one.

Plain Python over ``bridge.client``: the GUI calls :meth:`EngineManager.connect` from a worker thread
(starting an engine takes seconds to minutes) and shows the notices it reports.
"""

import os
import re
import threading
from typing import Any, Callable, Dict, Optional

from .. import errors
from ..config import EngineConfig, load_engine_config, user_config_dir
from ..model.options import EngineSettings, saved_engine_settings

__all__ = ["EngineManager", "EngineSettings", "default_log_path", "job_error", "saved_engine_settings"]


def _bridge():
    # Imported lazily so the plugin loads (and can say "not installed") without the bridge package.
    try:
        from bridge import client
        from bridge import errors as bridge_errors
    except ImportError as exc:
        raise errors.EngineNotInstalledError(
            f"the 'bridge' package is missing next to the plugin: {exc}"
        ) from exc
    return client, bridge_errors


def default_log_path() -> str:
    folder = user_config_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        import tempfile

        folder = tempfile.gettempdir()
    return os.path.join(folder, "engine.log")


class EngineManager:
    """One engine for the whole Krita session; thread-safe."""

    def __init__(
        self,
        settings: Optional[EngineSettings] = None,
        notify: Optional[Callable[[str], None]] = None,
        log_path: Optional[str] = None,
        start_timeout: float = 300.0,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.notify = notify or (lambda message: None)
        self.log_path = log_path or default_log_path()
        self.start_timeout = start_timeout
        self._lock = threading.RLock()
        self._process: Any = None
        self._starting: Any = None  # the process being started (under the lock, for seconds to minutes)
        self._address: Optional[tuple] = None  # host, port, token
        self.device: Optional[str] = None
        self.status: Dict[str, Any] = {}  # the engine's last status reply (device, models, versions)
        self.restarts = 0
        self.last_notice = ""

    def _say(self, message: str) -> None:
        self.last_notice = message
        self.notify(message)

    def configure(self, settings: EngineSettings) -> None:
        """New settings; a running local engine is stopped when what it was started with changed."""
        with self._lock:
            if settings != self.settings:
                self.stop()
            self.settings = settings

    @property
    def running(self) -> bool:
        # No lock: the GUI asks this while a worker may hold the lock for a whole engine start.
        process = self._process
        return process is not None and process.alive()

    def log_tail(self, lines: int = 20) -> str:
        process = self._process
        if process is None:
            return ""
        try:
            return process.stderr_tail(lines)
        except Exception:  # noqa: BLE001 - a log we cannot read must not hide the real error
            return ""

    def _start_local(self, notice: str = "Starting the engine…") -> None:
        client_mod, bridge_errors = _bridge()
        config: EngineConfig = load_engine_config(self.settings.config_path)
        extra_env = {"BLENDED_DIFFUSION_WEIGHTS": config.weights_dir} if config.weights_dir else None
        process = client_mod.EngineProcess(
            config.python,
            config.engine_root,
            models=self.settings.models or config.models,
            device=self.settings.device or None,
            extra_env=extra_env,
            log_path=self.log_path,
        )
        self._say(notice)
        self._starting = process
        try:
            self._address = process.start(timeout=self.start_timeout)
        except bridge_errors.BridgeError as exc:
            tail = ""
            try:
                tail = process.stderr_tail(20)
            except Exception:  # noqa: BLE001
                pass
            try:
                process.stop()
            except Exception:  # noqa: BLE001
                pass
            text = f"{exc} {tail}".lower()
            if "weights" in text and ("missing" in text or "not found" in text or "no such" in text):
                # Keep the engine's own explanation (file, folder, where to get it), not the start-up noise.
                lines = f"{exc}\n{tail}".splitlines()
                first = next(i for i, line in enumerate(lines) if "weights" in line.lower())
                detail = "\n".join(dict.fromkeys(lines[first:]))  # the tail may repeat the message
                raise errors.WeightsMissingError(re.split(r"ERROR engine\.\w+: ", detail)[-1]) from exc
            raise errors.EngineStartError(str(exc), "" if tail.strip() in str(exc) else tail) from exc
        finally:
            self._starting = None
        self._process = process

    def connect(self) -> Any:
        """A connected EngineClient; starts (or restarts) the local engine when needed."""
        client_mod, bridge_errors = _bridge()
        with self._lock:
            fingerprint = None
            if self.settings.mode == "remote":
                host, port, token = self.settings.host, int(self.settings.port), self.settings.token
                fingerprint = self.settings.fingerprint.strip() or None
            else:
                if self._process is not None and not self._process.alive():
                    tail = self.log_tail()
                    dead, self._process = self._process, None
                    dead.stop()  # collects the exit status and closes its pipes
                    self.restarts += 1
                    self._start_local(
                        "The engine had stopped; restarting it…"
                        + (f"\nIts last log lines:\n{tail}" if tail else "")
                    )
                elif self._process is None:
                    self._start_local()
                host, port, token = self._address
        try:
            # the engine this plugin started shares the machine: uncompressed result PNGs cost nothing to
            # send and are far cheaper to write and read (a big document's patches: seconds at level 1)
            level = None if self.settings.mode == "remote" else 0
            client = client_mod.EngineClient(host, port, token, fingerprint=fingerprint, png_level=level)
            status = client.status()
        except bridge_errors.BridgeError as exc:
            if self.settings.mode == "remote":
                raise errors.EngineStartError(
                    f"cannot reach the remote engine at {host}:{port}: {exc}"
                ) from exc
            raise errors.EngineCrashedError(str(exc), self.log_tail()) from exc
        except OSError as exc:
            raise errors.EngineStartError(f"cannot connect to the engine at {host}:{port}: {exc}") from exc
        self.status = dict(status) if isinstance(status, dict) else {}
        self.device = str(self.status.get("device") or "unknown device")
        return client

    def stop(self) -> None:
        starting = self._starting
        if starting is not None:
            # Quitting while an engine starts: end it now rather than wait for the start-up to finish.
            try:
                starting.stop(timeout=2.0)
            except Exception:  # noqa: BLE001 - stopping at exit must never raise
                pass
        with self._lock:
            process, self._process, self._address = self._process, None, None
        if process is not None:
            try:
                process.stop()
            except Exception:  # noqa: BLE001 - stopping at exit must never raise
                pass


def job_error(exc: BaseException, log_tail: str = "") -> errors.PluginError:
    """A bridge/engine exception as the message the user sees."""
    if isinstance(exc, errors.PluginError):
        return exc
    code = str(getattr(exc, "code", "") or "")
    message = str(getattr(exc, "message", "") or exc)
    if code == "cancelled":
        return errors.CancelledError()
    if code.startswith("weights") or ("weights" in message.lower() and "missing" in message.lower()):
        return errors.WeightsMissingError(message)
    if code in ("connection_failed", "connection_closed", "bad_frame"):
        return errors.EngineCrashedError(message, log_tail)
    return errors.EngineJobFailed(code or type(exc).__name__, message)
