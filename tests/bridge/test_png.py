"""bridge.png against Pillow: what it writes Pillow reads, what Pillow writes (all filters) it reads."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from bridge.png import decode_png, encode_png


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_written_png_reads_back_in_pillow(mode, level):
    channels = len(mode)
    width, height = 37, 11
    pixels = os.urandom(width * height * channels)
    data = encode_png(width, height, mode, pixels, level)
    image = Image.open(io.BytesIO(data))
    assert (image.mode, image.size) == (mode, (width, height))
    assert image.tobytes() == pixels
    assert decode_png(data) == (width, height, mode, pixels)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_reads_pillow_pngs_with_every_filter(mode):
    # a gradient plus noise makes Pillow's adaptive filter choose several filter types
    image = Image.linear_gradient("L").resize((40, 30)).convert(mode)
    noise = Image.frombytes(mode, image.size, os.urandom(40 * 30 * len(mode)))
    image = Image.blend(image, noise, 0.1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    raw = buffer.getvalue()
    assert decode_png(raw) == (40, 30, mode, image.tobytes())


def test_large_image_is_split_into_several_idat_chunks():
    width, height = 2048, 2100  # 17 MB of RGBA: more than one 16 MiB IDAT chunk at level 0
    pixels = bytes(range(256)) * (width * height * 4 // 256)
    data = encode_png(width, height, "RGBA", pixels, 0)
    assert data.count(b"IDAT") >= 2
    assert decode_png(data)[3] == pixels


@pytest.mark.parametrize(
    "args",
    [
        (0, 4, "RGBA", b""),
        (2, 2, "CMYK", b"\x00" * 16),
        (2, 2, "RGB", b"\x00" * 11),
        (2, 2, "RGB", b"\x00" * 12, 10),
    ],
)
def test_encode_rejects_bad_input(args):
    with pytest.raises(ValueError):
        encode_png(*args)


def test_decode_rejects_unsupported_and_broken_pngs():
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="only 8-bit"):
        decode_png(buffer.getvalue())
    data = encode_png(4, 4, "RGB", b"\x10" * 48)
    with pytest.raises(ValueError):
        decode_png(data[:-20])
    with pytest.raises(ValueError):
        decode_png(b"GIF89a" + data)
