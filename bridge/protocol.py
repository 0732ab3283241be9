"""Framing of bridge messages: a length-prefixed JSON header followed by binary attachments.

One frame on the wire::

    MAGIC (4 bytes, b"BDKB") | header length (4 bytes, unsigned big-endian) | header (UTF-8 JSON object)
    | attachment 0 | attachment 1 | ...

The header is a JSON object with a ``type`` string and, when the message carries binary data, an
``attachments`` list of ``{"name": str, "size": int}`` in the order the bytes follow. Every size is checked
against :class:`Limits` as soon as the header has arrived, before any attachment byte is buffered, so a peer
cannot make the other side allocate more than the limits allow. Anything that does not parse raises
:class:`~bridge.errors.ProtocolError`; the receiver replies with an error and closes that connection.

Standard library only; runs on Python 3.8 (Krita's plugin side) and in the engine's environment.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from bridge import errors
from bridge.limits import MAX_IMAGE_PIXELS

PROTOCOL_VERSION = 1
MAGIC = b"BDKB"
_PREFIX = struct.Struct(">4sI")
PREFIX_SIZE = _PREFIX.size
_RECV_CHUNK = 1 << 20
_NAME_MAX = 64
_RESERVED_KEYS = ("type", "attachments")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Attachments = Sequence[Tuple[str, bytes]]


def worst_case_png_bytes(width: int, height: int, channels: int = 4, bit_depth: int = 8) -> int:
    """Upper bound of a PNG's size for an image that does not compress at all.

    Raw scanlines (a filter byte each), deflated with at most 0.1% growth (zlib's own bound, compressBound,
    is about 0.03%), the signature, IHDR, one IDAT chunk per 2**31 - 1 bytes and IEND.
    """
    raw = height * (1 + math.ceil(width * channels * bit_depth / 8))
    deflated = raw + raw // 1024 + 64
    idat_chunks = max(1, math.ceil(deflated / (2**31 - 1)))
    return len(PNG_SIGNATURE) + 25 + 12 * idat_chunks + deflated + 12


@dataclass(frozen=True)
class Limits:
    """Size limits a receiver enforces. The defaults let a 16384x16384 8-bit RGBA PNG through uncompressed."""

    max_header_bytes: int = 1 << 20
    max_attachments: int = 256
    max_attachment_bytes: int = 1280 << 20  # worst case of a 16384^2 RGBA PNG is about 1,074 MB
    max_message_bytes: int = 3 << 30  # image + mask + init image of that size
    max_image_pixels: int = MAX_IMAGE_PIXELS  # the one pixel limit (bridge/limits.py)

    def handshake(self) -> Limits:
        """The limits before a peer has authenticated: a small header and no attachments."""
        return Limits(
            max_header_bytes=min(self.max_header_bytes, 16 << 10),
            max_attachments=0,
            max_attachment_bytes=0,
            max_message_bytes=0,
            max_image_pixels=self.max_image_pixels,
        )


@dataclass
class Message:
    """A received message: its header (including ``type``) and its attachments by name."""

    type: str
    header: Dict[str, Any]
    attachments: Dict[str, bytes] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.header.get(key, default)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (which strict JSON cannot carry) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def encode_message(
    msg_type: str, fields: Optional[Dict[str, Any]] = None, attachments: Attachments = ()
) -> List[bytes]:
    """The frame of one message as a list of buffers (attachments are not copied)."""
    header: Dict[str, Any] = {"type": msg_type}
    for key, value in (fields or {}).items():
        if key in _RESERVED_KEYS:
            raise ValueError(f"header field {key!r} is reserved")
        header[key] = value
    names = set()
    declared = []
    for name, data in attachments:
        if name in names:
            raise ValueError(f"attachment name {name!r} used twice")
        names.add(name)
        declared.append({"name": name, "size": len(data)})
    if declared:
        header["attachments"] = declared
    body = json.dumps(_json_safe(header), allow_nan=False, separators=(",", ":")).encode("utf-8")
    parts = [_PREFIX.pack(MAGIC, len(body)), body]
    parts.extend(data for _name, data in attachments if len(data))
    return parts


def parse_prefix(prefix: bytes, limits: Limits) -> int:
    """Check the 8-byte frame prefix; return the header length."""
    magic, header_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise errors.ProtocolError(f"not a bridge frame (bad magic bytes {bytes(magic)!r})", errors.BAD_FRAME)
    if header_len == 0:
        raise errors.ProtocolError("empty message header", errors.BAD_FRAME)
    if header_len > limits.max_header_bytes:
        raise errors.ProtocolError(
            f"message header of {header_len} bytes exceeds the limit of {limits.max_header_bytes}",
            errors.TOO_LARGE,
        )
    return header_len


def parse_header(raw: bytes, limits: Limits) -> Tuple[Dict[str, Any], List[Tuple[str, int]]]:
    """Decode and validate a header; return it and its declared attachments as (name, size)."""
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.ProtocolError(
            f"message header is not valid UTF-8 JSON: {exc}", errors.BAD_FRAME
        ) from None
    except RecursionError:
        raise errors.ProtocolError("message header is nested too deeply", errors.BAD_FRAME) from None
    if not isinstance(header, dict):
        raise errors.ProtocolError("message header must be a JSON object", errors.BAD_MESSAGE)
    msg_type = header.get("type")
    if not isinstance(msg_type, str) or not msg_type or len(msg_type) > _NAME_MAX:
        raise errors.ProtocolError("message header needs a 'type' string", errors.BAD_MESSAGE)
    declared = header.get("attachments", [])
    if not isinstance(declared, list):
        raise errors.ProtocolError("'attachments' must be a list", errors.BAD_MESSAGE)
    if len(declared) > limits.max_attachments:
        raise errors.ProtocolError(
            f"{len(declared)} attachments exceed the limit of {limits.max_attachments}",
            errors.TOO_LARGE,
        )
    result: List[Tuple[str, int]] = []
    names = set()
    total = 0
    for entry in declared:
        if not isinstance(entry, dict) or set(entry) != {"name", "size"}:
            raise errors.ProtocolError(
                "each attachment must be {'name': str, 'size': int}", errors.BAD_MESSAGE
            )
        name, size = entry["name"], entry["size"]
        if not isinstance(name, str) or not name or len(name) > _NAME_MAX or name in names:
            raise errors.ProtocolError("attachment names must be unique short strings", errors.BAD_MESSAGE)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errors.ProtocolError(
                f"attachment {name!r}: size must be an integer >= 0", errors.BAD_MESSAGE
            )
        if size > limits.max_attachment_bytes:
            raise errors.ProtocolError(
                f"attachment {name!r} of {size} bytes exceeds the limit of {limits.max_attachment_bytes}",
                errors.TOO_LARGE,
            )
        total += size
        names.add(name)
        result.append((name, size))
    if total > limits.max_message_bytes:
        raise errors.ProtocolError(
            f"attachments of {total} bytes in all exceed the limit of {limits.max_message_bytes}",
            errors.TOO_LARGE,
        )
    return header, result


class MessageReader:
    """Reads whole messages from a socket; a read that times out keeps its partial frame for the next call."""

    def __init__(self, sock: socket.socket, limits: Optional[Limits] = None) -> None:
        self._sock = sock
        self.limits = limits or Limits()
        self._reset()

    def _reset(self) -> None:
        self._stage = "prefix"
        self._buf = bytearray(PREFIX_SIZE)
        self._filled = 0
        self._header: Dict[str, Any] = {}
        self._declared: List[Tuple[str, int]] = []
        self._received: Dict[str, bytes] = {}

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has arrived."""
        return self._stage != "prefix" or self._filled > 0

    def read(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, or None when ``timeout`` seconds (in all) pass first.

        Raises ConnectionClosed at a clean end of stream, ProtocolError for invalid or truncated frames.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sock.settimeout(timeout)
        while True:
            if self._filled < len(self._buf):
                if deadline is not None:  # a total deadline: a peer dribbling bytes cannot stretch it
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._sock.settimeout(remaining)
                try:
                    window = memoryview(self._buf)[self._filled : self._filled + _RECV_CHUNK]
                    count = self._sock.recv_into(window)
                except socket.timeout:
                    return None
                except (ConnectionError, OSError) as exc:
                    if self.mid_frame:
                        raise errors.ProtocolError(f"connection broke inside a frame: {exc}") from None
                    raise errors.ConnectionClosed(f"connection closed: {exc}") from None
                if count == 0:
                    if not self.mid_frame:
                        raise errors.ConnectionClosed("connection closed by the peer")
                    raise errors.ProtocolError(
                        f"truncated frame: the connection closed after {self._filled} of "
                        f"{len(self._buf)} bytes of the {self._stage}"
                    )
                self._filled += count
                continue
            message = self._advance()
            if message is not None:
                return message

    def _advance(self) -> Optional[Message]:
        """The current buffer is full: move to the next stage; return the message when it is complete."""
        if self._stage == "prefix":
            header_len = parse_prefix(bytes(self._buf), self.limits)
            self._stage, self._buf, self._filled = "header", bytearray(header_len), 0
            return None
        if self._stage == "header":
            self._header, self._declared = parse_header(self._buf, self.limits)
        else:  # an attachment is complete
            name = self._declared[len(self._received)][0]
            self._received[name] = self._buf  # type: ignore[assignment]  # bytearray is bytes-like
        while len(self._received) < len(self._declared):
            name, size = self._declared[len(self._received)]
            if size:
                self._stage, self._buf, self._filled = "attachment", bytearray(size), 0
                return None
            self._received[name] = b""
        message = Message(self._header["type"], self._header, self._received)
        self._reset()
        return message


class MessageWriter:
    """Sends messages on a socket; safe to call from several threads (whole frames never interleave)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(
        self, msg_type: str, fields: Optional[Dict[str, Any]] = None, attachments: Attachments = ()
    ) -> None:
        send_parts(self._sock, encode_message(msg_type, fields, attachments), self._lock)


def send_parts(sock: socket.socket, parts: Iterable[bytes], lock: Optional[threading.Lock] = None) -> None:
    """Send the buffers of one frame back to back (under ``lock`` when given)."""
    if lock is None:
        for part in parts:
            sock.sendall(part)
        return
    with lock:
        for part in parts:
            sock.sendall(part)


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    bit_depth: int
    color_type: int

    @property
    def channels(self) -> int:
        return {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[self.color_type]


def png_info(data: bytes) -> PngInfo:
    """Read a PNG's size and pixel format from its IHDR chunk; ValueError when it is not a PNG."""
    if len(data) < 33 or bytes(data[:8]) != PNG_SIGNATURE:
        raise ValueError("not a PNG image (missing PNG signature)")
    length, chunk_type = struct.unpack(">I4s", bytes(data[8:16]))
    if chunk_type != b"IHDR" or length != 13:
        raise ValueError("not a valid PNG image (the first chunk is not IHDR)")
    ihdr = bytes(data[16:29])
    (crc,) = struct.unpack(">I", bytes(data[29:33]))
    if zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF != crc:
        raise ValueError("not a valid PNG image (IHDR checksum mismatch)")
    width, height, bit_depth, color_type, _compression, _filter, _interlace = struct.unpack(">IIBBBBB", ihdr)
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise ValueError(f"PNG image has an invalid size {width}x{height}")
    valid_depths = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if bit_depth not in valid_depths.get(color_type, ()):
        raise ValueError(f"PNG image has an invalid colour type {color_type} / bit depth {bit_depth}")
    return PngInfo(width, height, bit_depth, color_type)
