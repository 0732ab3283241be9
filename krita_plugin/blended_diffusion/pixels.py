"""Pixel conversions between Krita's layer bytes and 8-bit RGBA, a small PNG codec, and mask helpers.

Plain Python (standard library only) because Krita's Python has no numpy; everything here works on
``bytes`` in row-major order without padding, so it is unit-testable anywhere.
"""

import struct
from array import array
from dataclasses import dataclass
from typing import List, Optional, Tuple

from bridge import png as bridge_png
from bridge.protocol import PNG_SIGNATURE

from .errors import UnsupportedColorSpaceError

SUPPORTED_DEPTHS = ("U8", "U16", "F16", "F32")


@dataclass(frozen=True)
class PixelFormat:
    """How one Krita layer stores a pixel: channel order, bytes per channel and transfer curve."""

    depth: str  # U8, U16, F16, F32
    linear: bool  # profile has a linear (gamma 1.0) transfer curve, as Krita's 16-bit/float defaults do

    @property
    def bytes_per_pixel(self) -> int:
        return {"U8": 4, "U16": 8, "F16": 8, "F32": 16}[self.depth]


def pixel_format(model: str, depth: str, profile: str = "") -> PixelFormat:
    """The format for a Krita colour model/depth/profile, or UnsupportedColorSpaceError (CMYK, Lab, grey…)."""
    if model != "RGBA" or depth not in SUPPORTED_DEPTHS:
        raise UnsupportedColorSpaceError(model, depth)
    name = (profile or "").lower()
    return PixelFormat(depth, "g10" in name or "linear" in name)


def _srgb_encode(v: float) -> float:
    v = min(max(v, 0.0), 1.0)
    return v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


def _srgb_decode(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


_LUT16_TO8: dict = {}


def _lut16_to_8(linear: bool) -> bytes:
    # 65536-entry table built once; a lookup per channel is far cheaper than a pow() per channel.
    if linear not in _LUT16_TO8:
        if linear:
            _LUT16_TO8[linear] = bytes(int(_srgb_encode(i / 65535.0) * 255.0 + 0.5) for i in range(65536))
        else:
            _LUT16_TO8[linear] = bytes((i * 255 + 32767) // 65535 for i in range(65536))
    return _LUT16_TO8[linear]


def _float_to_8(values, linear: bool) -> bytearray:
    out = bytearray(len(values))
    for i, v in enumerate(values):
        if i % 4 == 3 or not linear:
            v = 0.0 if v != v else min(max(v, 0.0), 1.0)  # NaN -> 0
        else:
            v = _srgb_encode(0.0 if v != v else v)
        out[i] = int(v * 255.0 + 0.5)
    return out


def to_rgba8(data: bytes, fmt: PixelFormat) -> bytes:
    """Krita layer bytes -> 8-bit sRGB RGBA bytes (alpha is never transfer-curved)."""
    if fmt.depth == "U8":
        src = bytes(data)
        out = bytearray(len(src))
        out[0::4], out[1::4], out[2::4], out[3::4] = src[2::4], src[1::4], src[0::4], src[3::4]
        if fmt.linear:
            lut = bytes(int(_srgb_encode(i / 255.0) * 255.0 + 0.5) for i in range(256))
            alpha = out[3::4]
            out = bytearray(bytes(out).translate(lut))
            out[3::4] = alpha
        return bytes(out)
    if fmt.depth == "U16":
        words = array("H")
        words.frombytes(bytes(data))
        if struct.pack("=H", 1) != b"\x01\x00":
            words.byteswap()  # Krita's bytes are little-endian
        lut = _lut16_to_8(fmt.linear)
        alpha_lut = _lut16_to_8(False)
        n = len(words)
        out = bytearray(n)
        out[0::4] = bytes(lut[v] for v in words[2::4])
        out[1::4] = bytes(lut[v] for v in words[1::4])
        out[2::4] = bytes(lut[v] for v in words[0::4])
        out[3::4] = bytes(alpha_lut[v] for v in words[3::4])
        return bytes(out)
    code, size = ("e", 2) if fmt.depth == "F16" else ("f", 4)
    values = struct.unpack(f"<{len(data) // size}{code}", bytes(data))
    return bytes(_float_to_8(values, fmt.linear))  # float RGBA is already R, G, B, A


def from_rgba8(rgba: bytes, fmt: PixelFormat) -> bytes:
    """8-bit sRGB RGBA bytes -> bytes for a new Krita layer of this format."""
    rgba = bytes(rgba)
    if fmt.depth == "U8":
        if fmt.linear:
            lut = bytes(int(_srgb_decode(i / 255.0) * 255.0 + 0.5) for i in range(256))
            alpha = rgba[3::4]
            tmp = bytearray(rgba.translate(lut))
            tmp[3::4] = alpha
            rgba = bytes(tmp)
        out = bytearray(len(rgba))
        out[0::4], out[1::4], out[2::4], out[3::4] = rgba[2::4], rgba[1::4], rgba[0::4], rgba[3::4]
        return bytes(out)
    if fmt.linear:
        levels = [_srgb_decode(i / 255.0) for i in range(256)]
    else:
        levels = [i / 255.0 for i in range(256)]
    if fmt.depth == "U16":
        lut = [int(v * 65535.0 + 0.5) for v in levels]
        words = array("H", bytes(2 * len(rgba)))
        words[0::4] = array("H", [lut[v] for v in rgba[2::4]])
        words[1::4] = array("H", [lut[v] for v in rgba[1::4]])
        words[2::4] = array("H", [lut[v] for v in rgba[0::4]])
        words[3::4] = array("H", [v * 257 for v in rgba[3::4]])
        if struct.pack("=H", 1) != b"\x01\x00":
            words.byteswap()
        return words.tobytes()
    values = [levels[v] for v in rgba]
    values[3::4] = [v / 255.0 for v in rgba[3::4]]
    code = "e" if fmt.depth == "F16" else "f"
    return struct.pack(f"<{len(values)}{code}", *values)


# ---------------------------------------------------------------- masks and rectangles


def crop(data: bytes, width: int, height: int, bpp: int, box: Tuple[int, int, int, int]) -> bytes:
    """The (x, y, w, h) rectangle of a row-major image with ``bpp`` bytes a pixel."""
    x, y, w, h = box
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
        raise ValueError(f"crop box {box} is outside the {width}x{height} image")
    if len(data) != width * height * bpp:
        raise ValueError(f"expected {width * height * bpp} bytes for {width}x{height}x{bpp}, got {len(data)}")
    stride = width * bpp
    return b"".join(data[(y + r) * stride + x * bpp : (y + r) * stride + (x + w) * bpp] for r in range(h))


def mask_bbox(mask: bytes, width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
    """(left, top, right, bottom), right/bottom exclusive, of the non-zero bytes of a 1-byte mask."""
    if len(mask) != width * height:
        raise ValueError(f"mask has {len(mask)} bytes, expected {width * height}")
    left, right, top, bottom = width, 0, None, 0
    for y in range(height):
        row = mask[y * width : (y + 1) * width]
        stripped = row.lstrip(b"\0")
        if not stripped:
            continue
        if top is None:
            top = y
        bottom = y + 1
        left = min(left, width - len(stripped))
        right = max(right, len(row.rstrip(b"\0")))
    if top is None:
        return None
    return left, top, right, bottom


_INVERT = bytes(255 - i for i in range(256))


def invert_mask(mask: bytes) -> bytes:
    return bytes(mask).translate(_INVERT)


def limit_alpha(rgba: bytes, mask: bytes) -> bytes:
    """Clamp each pixel's alpha to the mask, so a candidate can never touch pixels outside the edit mask."""
    if len(rgba) != 4 * len(mask):
        raise ValueError(f"RGBA patch has {len(rgba)} bytes for a {len(mask)}-pixel mask")
    alpha = rgba[3::4]
    if alpha == mask:  # the engine's patches carry the mask as alpha: nothing to clamp (a C compare, not
        return bytes(rgba)  # a Python min() per pixel: 0.5 s for a 2250x2250 patch)
    out = bytearray(rgba)
    out[3::4] = bytes(map(min, alpha, mask))
    return bytes(out)


def composite_over(
    base: bytes, width: int, height: int, patch: bytes, box: Tuple[int, int, int, int]
) -> bytes:
    """8-bit RGBA ``patch`` (placed at ``box`` in base coordinates) over the ``width`` x ``height`` RGBA
    ``base``, straight alpha: what Krita shows for a candidate over its source, as Vary's init image."""
    bx, by, bw, bh = box
    if len(patch) != 4 * bw * bh or len(base) != 4 * width * height:
        raise ValueError("patch or base size does not match its box")
    if bx < 0 or by < 0 or bx + bw > width or by + bh > height:
        raise ValueError(f"patch box {box} is outside the {width}x{height} image")
    out = bytearray(base)
    for row in range(bh):
        src = patch[4 * row * bw : 4 * (row + 1) * bw]
        start = 4 * ((by + row) * width + bx)
        alpha = src[3::4]
        if alpha.count(255) == bw:  # fully covered row: a slice copy
            out[start : start + 4 * bw] = src
            continue
        for i, a in enumerate(alpha):
            if a == 0:
                continue
            o = start + 4 * i
            p = 4 * i
            under = out[o + 3]
            top = a * 255
            total = top + under * (255 - a)  # result alpha x 255
            for c in range(3):
                out[o + c] = (src[p + c] * top + out[o + c] * under * (255 - a) + total // 2) // total
            out[o + 3] = (total + 127) // 255
    return bytes(out)


def scale_nearest(data: bytes, width: int, height: int, bpp: int, new_w: int, new_h: int) -> bytes:
    """Nearest-neighbour resize, for thumbnails."""
    rows: List[bytes] = []
    for ny in range(new_h):
        y = min(height - 1, ny * height // new_h)
        row = data[y * width * bpp : (y + 1) * width * bpp]
        rows.append(
            b"".join(
                row[(nx * width // new_w) * bpp : (nx * width // new_w + 1) * bpp] for nx in range(new_w)
            )
        )
    return b"".join(rows)


# ---------------------------------------------------------------- PNG
# The bridge's codec (standard library, shared with the engine); level 0 (stored) is the fastest on loopback.

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def encode_png(width: int, height: int, data: bytes, channels: int, level: int = 0) -> bytes:
    """8-bit PNG from grey (1), RGB (3) or RGBA (4) bytes."""
    if channels not in (1, 3, 4):
        raise ValueError(f"cannot write a PNG with {channels} channels")
    return bridge_png.encode_png(width, height, _MODES[channels], data, level)


def decode_png(png: bytes) -> Tuple[int, int, bytes]:
    """(width, height, RGBA bytes) of an 8-bit non-interlaced grey, grey+alpha, RGB or RGBA PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image")
    width, height, mode, data = bridge_png.decode_png(png)
    n = width * height
    if mode == "RGBA":
        return width, height, bytes(data)
    out = bytearray(4 * n)
    if mode == "RGB":
        out[0::4], out[1::4], out[2::4] = data[0::3], data[1::3], data[2::3]
        out[3::4] = b"\xff" * n
    elif mode == "L":
        out[0::4] = out[1::4] = out[2::4] = data
        out[3::4] = b"\xff" * n
    else:
        out[0::4] = out[1::4] = out[2::4] = data[0::2]
        out[3::4] = data[1::2]
    return width, height, bytes(out)
