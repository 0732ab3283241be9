"""A fast PNG writer and reader for 8-bit greyscale, RGB and RGBA, standard library only.

Why not Pillow's writer: it chooses a filter for every row by trying all five, which for a 4096x4096 image
costs seconds before zlib even starts. Rows written here use filter 0 (none) and a configurable zlib level
(0 = stored, the fastest; 1 = fast, with real compression on photos): several times faster at level 0.
Any PNG reader (Pillow, Qt, browsers) reads the result.

The reader is fast for PNGs that use filter 0 on every row (what the writer makes) and correct, but slow
(pure Python), for other non-interlaced 8-bit L/LA/RGB/RGBA PNGs.
"""

from __future__ import annotations

import struct
import zlib
from typing import List, Optional, Tuple

from bridge.protocol import PNG_SIGNATURE, png_info

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_COLOR_TYPE = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
_MODE = {value: key for key, value in _COLOR_TYPE.items()}
_IDAT_CHUNK = 1 << 22  # uncompressed bytes per IDAT chunk
_IDAT_CRC = zlib.crc32(b"IDAT")
_STORED_MAX = 65535  # the largest stored deflate block


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(width: int, height: int, mode: str, pixels: bytes, level: int = 1) -> bytes:
    """PNG bytes of ``pixels`` (rows top to bottom, ``width * channels`` bytes each, no padding)."""
    if mode not in CHANNELS:
        raise ValueError(f"unsupported mode {mode!r}; use one of {', '.join(CHANNELS)}")
    if width < 1 or height < 1:
        raise ValueError(f"invalid image size {width}x{height}")
    if not 0 <= level <= 9:
        raise ValueError(f"zlib level must be 0..9, got {level}")
    stride = width * CHANNELS[mode]
    view = memoryview(pixels).cast("B")
    if len(view) != stride * height:
        raise ValueError(f"{len(view)} bytes of pixels do not make a {width}x{height} {mode} image")
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[mode], 0, 0, 0)
    parts: List[bytes] = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    if level == 0 and stride + 1 <= _STORED_MAX:
        parts += _stored_idat(view, stride, height)
        parts.append(_chunk(b"IEND", b""))
        return b"".join(parts)
    compressor = zlib.compressobj(level)
    rows_per_block = max(1, _IDAT_CHUNK // (stride + 1))
    for top in range(0, height, rows_per_block):
        # Each block of rows becomes its own IDAT chunk: no copy of the whole deflated stream.
        pieces = []
        for y in range(top, min(height, top + rows_per_block)):
            pieces.append(compressor.compress(b"\x00"))
            pieces.append(compressor.compress(view[y * stride : (y + 1) * stride]))
        if top + rows_per_block >= height:
            pieces.append(compressor.flush())
        data = b"".join(pieces)
        if data:
            parts += [
                struct.pack(">I", len(data)) + b"IDAT",
                data,
                struct.pack(">I", zlib.crc32(data, _IDAT_CRC)),
            ]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _stored_idat(view: memoryview, stride: int, height: int) -> List[bytes]:
    """One IDAT chunk holding a zlib stream of stored (uncompressed) deflate blocks of whole rows.

    zlib's own level 0 copies every byte through its window; writing the stored blocks here lets the rows
    go straight from the caller's buffer into the one final join, with adler32 and crc32 run over them.
    """
    rows_per_block = _STORED_MAX // (stride + 1)
    body: List[bytes] = [b"\x78\x01"]  # zlib header: deflate, 32K window, no dictionary
    adler = 1
    for top in range(0, height, rows_per_block):
        bottom = min(height, top + rows_per_block)
        length = (bottom - top) * (stride + 1)
        body.append(struct.pack("<BHH", int(bottom == height), length, length ^ 0xFFFF))
        for y in range(top, bottom):
            row = view[y * stride : (y + 1) * stride]
            adler = zlib.adler32(row, zlib.adler32(b"\x00", adler))
            body += [b"\x00", row]
    body.append(struct.pack(">I", adler))
    crc = _IDAT_CRC
    size = 0
    for part in body:
        crc = zlib.crc32(part, crc)
        size += len(part)
    return [struct.pack(">I", size) + b"IDAT", *body, struct.pack(">I", crc)]


def _inflate_stored(stream: memoryview) -> Optional[bytearray]:
    """The data of a zlib stream made only of stored deflate blocks (what level 0 writes), else None.

    A plain copy of each block instead of zlib's inflate, which is several times slower for stored data.
    """
    if len(stream) < 6 or stream[0] & 0x0F != 8 or (stream[0] << 8 | stream[1]) % 31 or stream[1] & 0x20:
        return None
    pieces = []
    offset = 2
    while True:
        if offset + 5 > len(stream) or stream[offset] & 0x06:  # not a stored block (BTYPE != 00)
            return None
        final = stream[offset] & 1
        length, check = struct.unpack("<HH", stream[offset + 1 : offset + 5])
        if length ^ check != 0xFFFF or offset + 5 + length > len(stream):
            return None
        pieces.append(stream[offset + 5 : offset + 5 + length])
        offset += 5 + length
        if final:
            break
    if offset + 4 > len(stream):
        return None
    raw = bytearray().join(pieces)
    if zlib.adler32(raw) != struct.unpack(">I", stream[offset : offset + 4])[0]:
        raise ValueError("PNG image data is corrupt (adler32 mismatch)")
    return raw


def decode_png(data: bytes) -> Tuple[int, int, str, bytes]:
    """(width, height, mode, pixels: bytes-like) of an 8-bit non-interlaced L, LA, RGB or RGBA PNG."""
    info = png_info(data)
    if info.bit_depth != 8 or info.color_type not in _MODE:
        raise ValueError(f"only 8-bit L/LA/RGB/RGBA PNGs are supported, not colour type {info.color_type}")
    if bytes(data[28:29]) != b"\x00":
        raise ValueError("interlaced PNGs are not supported")
    mode = _MODE[info.color_type]
    view = memoryview(data)
    offset = len(PNG_SIGNATURE)
    idat: List[memoryview] = []
    while True:
        if offset + 12 > len(view):
            raise ValueError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", view[offset : offset + 8])
        body = view[offset + 8 : offset + 8 + length]
        if len(body) != length or offset + 12 + length > len(view):
            raise ValueError("truncated PNG chunk")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        offset += 12 + length
    raw = _inflate_stored(idat[0]) if len(idat) == 1 else None
    if raw is None:
        decompressor = zlib.decompressobj()
        raw = bytearray()
        for body in idat:
            raw += decompressor.decompress(body)
        raw += decompressor.flush()
    stride = info.width * CHANNELS[mode]
    if len(raw) != (stride + 1) * info.height:
        raise ValueError("PNG image data has the wrong length")
    return info.width, info.height, mode, _unfilter(raw, stride, info.height, CHANNELS[mode])


def _unfilter(raw: bytearray, stride: int, height: int, bpp: int) -> bytes:
    if not any(raw[:: stride + 1]):  # fast path: no row uses a filter
        del raw[:: stride + 1]  # drop the filter bytes in place
        return raw
    out = bytearray(stride * height)
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                row[i] = (row[i] + previous[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + predictor) & 0xFF
        elif kind != 0:
            raise ValueError(f"invalid PNG filter type {kind} in row {y}")
        out[y * stride : (y + 1) * stride] = row
        previous = row
    return bytes(out)
