"""Framing, limits and PNG header parsing of bridge.protocol, over real socket pairs."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from typing import Optional

import pytest

from bridge import errors
from bridge.protocol import (
    MAGIC,
    Limits,
    MessageReader,
    encode_message,
    parse_header,
    png_info,
    send_parts,
    worst_case_png_bytes,
)
from tests.bridge.helpers import make_png, png_from_raw


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def frame(header: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(header)) + header


def read_error(data: bytes, limits: Optional[Limits] = None, close: bool = True) -> errors.ProtocolError:
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        if close:
            a.shutdown(socket.SHUT_WR)
        with pytest.raises(errors.ProtocolError) as info:
            MessageReader(b, limits or Limits()).read(timeout=2.0)
        return info.value
    finally:
        a.close()
        b.close()


def test_round_trip_with_attachments(pair):
    a, b = pair
    image = os.urandom(300_000)  # larger than a socket buffer: the sender must run beside the reader
    sender = threading.Thread(
        target=send_parts,
        args=(a, encode_message("edit", {"id": 3, "params": {"x": 1.5}}, [("image", image), ("empty", b"")])),
    )
    sender.start()
    message = MessageReader(b).read(timeout=5.0)
    sender.join()
    assert message.type == "edit"
    assert message.get("id") == 3 and message.get("params") == {"x": 1.5}
    assert bytes(message.attachments["image"]) == image
    assert message.attachments["empty"] == b""
    assert list(message.attachments) == ["image", "empty"]


def test_several_messages_back_to_back(pair):
    a, b = pair
    for i in range(3):
        send_parts(a, encode_message("ping", {"id": i}))
    reader = MessageReader(b)
    assert [reader.read(timeout=1.0).get("id") for _ in range(3)] == [0, 1, 2]


def test_read_timeout_keeps_the_partial_frame(pair):
    a, b = pair
    data = b"".join(encode_message("status", {"id": "x"}, [("blob", b"0123456789")]))
    reader = MessageReader(b)
    a.sendall(data[:5])
    assert reader.read(timeout=0.05) is None
    assert reader.mid_frame
    a.sendall(data[5:20])
    assert reader.read(timeout=0.05) is None
    a.sendall(data[20:])
    message = reader.read(timeout=1.0)
    assert message.type == "status" and bytes(message.attachments["blob"]) == b"0123456789"
    assert not reader.mid_frame


def test_clean_close_between_frames_is_not_an_error(pair):
    a, b = pair
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(errors.ConnectionClosed):
        MessageReader(b).read(timeout=1.0)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\n\r\n", errors.BAD_FRAME),
        (MAGIC + struct.pack(">I", 0), errors.BAD_FRAME),
        (MAGIC + struct.pack(">I", 0xFFFFFFFF), errors.TOO_LARGE),
        (frame(b"{not json"), errors.BAD_FRAME),
        (frame(b"\xff\xfe"), errors.BAD_FRAME),
        (frame(b'{"type": "ping", "x": NaN}'), errors.BAD_FRAME),
        (frame(b"[1, 2]"), errors.BAD_MESSAGE),
        (frame(b'{"id": 1}'), errors.BAD_MESSAGE),
        (frame(b'{"type": 5}'), errors.BAD_MESSAGE),
        (frame(b'{"type": ""}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": {"a": 1}}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [5]}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [{"name": "a", "size": -1}]}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [{"name": "a", "size": 1.5}]}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [{"name": "a", "size": true}]}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [{"name": 3, "size": 1}]}'), errors.BAD_MESSAGE),
        (frame(b'{"type": "edit", "attachments": [{"name": "a", "size": 1, "x": 0}]}'), errors.BAD_MESSAGE),
        (
            frame(b'{"type": "edit", "attachments": [{"name": "a", "size": 1}, {"name": "a", "size": 1}]}'),
            errors.BAD_MESSAGE,
        ),
        (
            frame(b'{"type": "edit", "attachments": [{"name": "a", "size": 99999999999999}]}'),
            errors.TOO_LARGE,
        ),
        (frame(b"[" * 100000 + b"]" * 100000), errors.BAD_FRAME),
    ],
)
def test_invalid_frames_are_rejected_with_a_code(data, code):
    assert read_error(data).code == code


@pytest.mark.parametrize("cut", [3, 8, 12, 30])
def test_truncated_frames(cut):
    data = b"".join(encode_message("edit", {"id": 1}, [("image", b"x" * 10)]))
    error = read_error(data[:cut])
    assert error.code == errors.BAD_FRAME
    assert "truncated" in error.message


def test_limits_are_configurable():
    limits = Limits(max_header_bytes=64, max_attachments=1, max_attachment_bytes=10, max_message_bytes=15)
    assert (
        read_error(frame(json.dumps({"type": "x", "pad": "y" * 100}).encode()), limits).code
        == errors.TOO_LARGE
    )
    two = [{"name": "a", "size": 1}, {"name": "b", "size": 1}]
    assert (
        read_error(frame(json.dumps({"type": "x", "attachments": two}).encode()), limits).code
        == errors.TOO_LARGE
    )
    big = [{"name": "a", "size": 11}]
    assert (
        read_error(frame(json.dumps({"type": "x", "attachments": big}).encode()), limits).code
        == errors.TOO_LARGE
    )
    handshake = Limits().handshake()
    one = [{"name": "a", "size": 1}]
    data = frame(json.dumps({"type": "hello", "attachments": one}).encode())
    assert read_error(data, handshake).code == errors.TOO_LARGE


def test_default_limits_fit_an_incompressible_16384_square_rgba_png():
    worst = worst_case_png_bytes(16384, 16384, 4)
    assert worst > 16384 * 16384 * 4
    limits = Limits()
    assert worst <= limits.max_attachment_bytes
    assert 2 * worst + worst_case_png_bytes(16384, 16384, 1) <= limits.max_message_bytes
    assert 16384 * 16384 <= limits.max_image_pixels
    header = {
        "type": "edit",
        "attachments": [{"name": "image", "size": worst}, {"name": "init", "size": worst}],
    }
    parsed, declared = parse_header(json.dumps(header).encode(), limits)
    assert declared == [("image", worst), ("init", worst)]


def test_worst_case_png_bound_holds_for_random_pixels():
    width, height = 301, 77
    raw = b"".join(b"\x00" + os.urandom(width * 4) for _ in range(height))
    for level in (0, 9):
        data = png_from_raw(width, height, 6, raw, level)
        assert len(data) <= worst_case_png_bytes(width, height, 4)


def test_encode_rejects_reserved_fields_and_duplicate_names():
    with pytest.raises(ValueError):
        encode_message("x", {"type": "y"})
    with pytest.raises(ValueError):
        encode_message("x", {}, [("a", b"1"), ("a", b"2")])


def test_non_finite_floats_travel_as_null(pair):
    a, b = pair
    send_parts(a, encode_message("result", {"scores": [float("nan"), 1.0, float("inf")]}))
    assert MessageReader(b).read(timeout=1.0).get("scores") == [None, 1.0, None]


def test_png_info_reads_the_header():
    info = png_info(make_png(17, 5, 4))
    assert (info.width, info.height, info.bit_depth, info.color_type, info.channels) == (17, 5, 8, 6, 4)
    assert png_info(make_png(3, 2, 1)).channels == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a png at all, but long enough to have a header........",
        make_png(4, 4)[:20],
        make_png(4, 4)[:29] + b"\x00\x00\x00\x00",  # bad IHDR checksum
        png_from_raw(0, 4, 6, b""),
        png_from_raw(4, 4, 5, b"\x00" * 20),  # colour type 5 does not exist
    ],
)
def test_png_info_rejects_non_png(data):
    with pytest.raises(ValueError):
        png_info(data)
