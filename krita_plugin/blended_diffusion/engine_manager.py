"""The engine manager's public name for scripts (``api.run_edit_and_wait(..., engine=EngineManager(...))``,
docs/plugin.md): it lives in backend/manager.py."""

from .backend.manager import EngineManager, EngineSettings, default_log_path, job_error, saved_engine_settings

__all__ = ["EngineManager", "EngineSettings", "default_log_path", "job_error", "saved_engine_settings"]
