"""bridge.png against Pillow: what it writes Pillow reads, what Pillow writes (all filters) it reads."""

from __future__ import annotations

import io
import os
import random
import zlib

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
    # 4.5 MB of incompressible RGBA at level 1: more than one 4 MiB block of rows, one IDAT chunk each
    # (level 0 writes one chunk of stored blocks instead).
    width, height = 1024, 1100
    pixels = random.Random(3).randbytes(width * height * 4)
    data = encode_png(width, height, "RGBA", pixels, 1)
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


def test_level_0_writes_stored_blocks_that_every_reader_reads() -> None:
    """Level 0 takes the hand-written stored-block path (whole rows per block); Pillow and zlib agree."""
    width, height = 700, 97  # several rows per 64 KiB block, a short last block
    pixels = bytes((x * 7 + y * 13) % 256 for y in range(height) for x in range(width * 4))
    png = encode_png(width, height, "RGBA", pixels, level=0)
    assert png.count(b"IDAT") == 1
    length = int.from_bytes(png[33:37], "big")
    stream = png[41 : 41 + length]
    assert stream[2] & 0x06 == 0  # the first deflate block is stored
    assert len(zlib.decompress(stream)) == (width * 4 + 1) * height
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGBA" and image.tobytes() == pixels
    assert bytes(decode_png(png)[3]) == pixels


def test_stored_stream_with_damaged_data_is_refused() -> None:
    png = bytearray(encode_png(64, 64, "RGBA", bytes(range(256)) * 64, level=0))
    png[200] ^= 0xFF  # a pixel byte inside the stored block
    with pytest.raises(ValueError, match="corrupt"):
        decode_png(bytes(png))
