"""Errors a user can meet. Each message is written to be shown as is (CLI, Krita dialog, server reply)."""

from __future__ import annotations


class EngineError(Exception):
    """Base of all user-facing engine errors."""

    code = "engine_error"


class InputError(EngineError, ValueError):
    """Bad input from the user (image, mask, parameters, preset file...)."""

    code = "bad_input"


class UnknownPresetError(EngineError, KeyError):
    """The requested models preset does not exist."""

    code = "unknown_preset"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(EngineError):
    """A weight file problem (missing, corrupt, download failure)."""

    code = "weights_error"


class WeightsMissingError(WeightsError, FileNotFoundError):
    code = "weights_missing"


class WeightsCorruptError(WeightsError):
    """Present but truncated or with the wrong SHA-256."""

    code = "weights_corrupt"


class DownloadError(WeightsError):
    code = "download_failed"


class DeviceUnavailableError(EngineError):
    code = "device_unavailable"


class Cancelled(EngineError):
    """The job was cancelled by the user."""

    code = "cancelled"

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
