"""Exceptions shared by the bridge client and server.

Every exception carries a machine-readable ``code`` (the same codes travel in ``error`` messages on the wire)
and a message fit to show to the user as is.
"""

from __future__ import annotations

# Error codes sent in "error" messages. Codes marked fatal close the connection after the reply.
BAD_FRAME = "bad_frame"  # fatal: wrong magic, truncated frame, undecodable header
TOO_LARGE = "too_large"  # fatal when a frame exceeds the limits; per job when an image has too many pixels
BAD_MESSAGE = "bad_message"  # fatal: header is valid JSON but not a valid message (types, attachments)
AUTH_FAILED = "auth_failed"  # fatal: first message is not a hello with the right token
PROTOCOL_VERSION = "protocol_version"  # fatal: client and server speak different protocol versions
UNKNOWN_TYPE = "unknown_type"  # the connection stays open
INVALID_INPUT = "invalid_input"  # bad edit request (parameters, PNG data); the connection stays open
UNKNOWN_JOB = "unknown_job"  # cancel of a job this connection does not own or that has finished
CANCELLED = "cancelled"  # the job was cancelled (by request or because its client went away)
OUT_OF_MEMORY = "out_of_memory"  # the engine ran out of (GPU) memory; memory was released
ENGINE_ERROR = "engine_error"  # the engine reported a user-facing error (weights, device, ...)
INTERNAL_ERROR = "internal_error"  # unexpected exception in the engine; it keeps running
QUEUE_FULL = "queue_full"  # too many queued jobs
SHUTTING_DOWN = "shutting_down"
TOO_MANY_CONNECTIONS = "too_many_connections"  # the server refused a new connection
TLS_REQUIRED = "tls_required"  # fatal: a plain client reached an engine started with --tls
TLS_FAILED = "tls_failed"  # client side: the TLS handshake failed (engine without --tls, network)
TLS_FINGERPRINT = "tls_fingerprint"  # client side: the certificate is not the one pinned


class BridgeError(Exception):
    """Base of all bridge errors."""

    code = INTERNAL_ERROR

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(BridgeError):
    """The peer sent bytes that are not a valid message; the connection must be closed."""

    code = BAD_FRAME


class ConnectionClosed(BridgeError):
    """The peer closed the connection (cleanly, between messages)."""

    code = "connection_closed"


class EngineConnectionError(BridgeError):
    """The engine could not be reached or the connection broke."""

    code = "connection_failed"


class EngineAuthError(BridgeError):
    """The engine refused the token (or the protocol version)."""

    code = AUTH_FAILED


class EngineStartError(BridgeError):
    """The engine subprocess did not start or did not report ready in time."""

    code = "start_failed"


class EngineJobError(BridgeError):
    """A request or job ended with an error reply from the engine."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class JobCancelled(EngineJobError):
    """The job was cancelled before it finished."""

    def __init__(self, message: str = "the job was cancelled") -> None:
        super().__init__(CANCELLED, message)


class JobFailed(BridgeError):
    """Raised by a job runner on the server side to report an error with a specific code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class EngineTLSError(EngineConnectionError):
    """TLS to the engine failed, or its certificate does not have the pinned fingerprint."""

    code = TLS_FAILED
