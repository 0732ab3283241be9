"""engine.editing.shared.imaging: any input converted, context crop, soft-mask composite, RGBA patches
(no torch)."""

import io

import numpy as np
import pytest
from PIL import Image

from engine.editing.shared import imaging
from engine.errors import InputError


def _rng_image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))


def _soft_mask(width, height):
    """A soft-edged disc plus a one-pixel stroke, 0 elsewhere."""
    yy, xx = np.mgrid[0:height, 0:width]
    dist = np.hypot(xx - width * 0.4, yy - height * 0.55)
    mask = np.clip((height * 0.25 - dist) * 40, 0, 255).astype(np.uint8)
    mask[height // 5, width // 3 : width // 3 + 7] = 255
    return mask


def test_rgb_passes_unchanged_without_notes():
    image = _rng_image(37, 23)
    prepared = imaging.prepare_source(image)
    assert prepared.mode == "RGB" and prepared.notes == []
    assert np.array_equal(np.asarray(prepared.full()), np.asarray(image))


def test_rgba_keeps_its_alpha():
    image = _rng_image(19, 11, "RGBA")
    prepared = imaging.prepare_source(image)
    assert prepared.mode == "RGBA"
    assert np.array_equal(np.asarray(prepared.full()), np.asarray(image))


def test_greyscale_and_palette_are_converted_and_say_so():
    grey = imaging.prepare_source(Image.new("L", (5, 4), 77))
    assert grey.mode == "RGB" and "greyscale" in grey.notes[0]
    assert np.all(np.asarray(grey.rgb) == 77)
    la = imaging.prepare_source(Image.new("LA", (5, 4), (10, 99)))
    assert la.mode == "RGBA" and np.all(np.asarray(la.alpha) == 99)
    palette = Image.new("P", (4, 4), 1)
    palette.info["transparency"] = 1
    converted = imaging.prepare_source(palette)
    assert converted.mode == "RGBA" and "palette" in converted.notes[0]


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    array = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    prepared = imaging.prepare_source(Image.fromarray(array))
    assert np.asarray(prepared.rgb)[0, :, 0].tolist() == [0, 128, 255]
    assert "16-bit" in prepared.notes[0]


def test_sixteen_bit_rgb_png_is_noted(tmp_path):
    # a 16-bit RGB PNG written by hand (Pillow cannot write one): IHDR bit depth 16, colour type 2
    import struct
    import zlib

    width, height = 3, 2
    raw = b"".join(b"\x00" + bytes(range(width * 6)) for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "deep.png"
    path.write_bytes(png)
    prepared = imaging.prepare_source(imaging.open_image(str(path)))
    assert prepared.mode == "RGB" and prepared.size == (width, height)
    assert any("16 bits" in note for note in prepared.notes)


def test_open_image_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="not found"):
        imaging.open_image(str(tmp_path / "missing.png"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read"):
        imaging.open_image(str(junk))
    buffer = io.BytesIO()
    _rng_image(40, 40).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(InputError):
        imaging.open_image(str(truncated))


def test_mask_size_must_match_and_any_mode_is_read():
    with pytest.raises(InputError, match="differs"):
        imaging.mask_array(Image.new("L", (10, 10)), (10, 11))
    rgb_mask = Image.new("RGB", (4, 3), (255, 255, 255))
    assert imaging.mask_array(rgb_mask, (4, 3)).min() == 255
    bilevel = Image.new("1", (4, 3), 1)
    assert imaging.mask_array(bilevel, (4, 3)).min() == 255
    deep = Image.fromarray(np.full((3, 4), 65535, dtype=np.uint16))
    assert imaging.mask_array(deep, (4, 3)).min() == 255


def test_empty_mask_is_an_input_error():
    with pytest.raises(InputError, match="empty"):
        imaging.choose_box(np.zeros((9, 9), np.uint8), 32)


def test_composite_is_byte_exact_outside_a_soft_mask_on_an_odd_size():
    source = _rng_image(203, 117, "RGBA", seed=1)
    mask = _soft_mask(203, 117)
    box = imaging.choose_box(mask, 64)
    edit = _rng_image(box[2], box[3], seed=2)
    out = imaging.composite(source, edit, mask, box)
    assert out.mode == "RGBA" and out.size == source.size
    src, res = np.asarray(source), np.asarray(out)
    assert np.array_equal(res[mask == 0], src[mask == 0])  # RGB and alpha
    x, y, w, h = box
    full = mask == 255
    region = np.zeros_like(full)
    region[y : y + h, x : x + w] = True
    assert np.array_equal(res[full & region][:, :3], np.asarray(edit)[full[y : y + h, x : x + w]])
    assert np.all(res[full][:, 3] == 255)  # generated content is opaque
    soft = (mask > 0) & (mask < 255)
    assert soft.any()
    between = res[soft][:, :3].astype(int)
    lo = np.minimum(src[soft][:, :3], np.asarray(edit)[soft[y : y + h, x : x + w]]).astype(int)
    hi = np.maximum(src[soft][:, :3], np.asarray(edit)[soft[y : y + h, x : x + w]]).astype(int)
    assert np.all((between >= lo) & (between <= hi))


def test_patch_alpha_is_the_mask():
    source = _rng_image(50, 30)
    mask = _soft_mask(50, 30)
    box = imaging.choose_box(mask, 16)
    pixels = imaging.CandidatePixels(imaging.plan_blend(source, mask, box), source, imaging.crop(source, box))
    patch = pixels.patch()
    assert patch.mode == "RGBA" and patch.size == pixels.box[2:]
    assert np.array_equal(np.asarray(patch)[..., 3], imaging.crop_array(mask, pixels.box))


def test_binary_model_mask_keeps_thin_strokes_when_shrinking():
    crop = np.zeros((400, 400), np.uint8)
    crop[201, 50:350] = 3  # one faint pixel row
    small = imaging.binary_model_mask(crop, 32)
    assert small.shape == (32, 32) and set(np.unique(small)) == {0.0, 1.0}
    assert small[16].sum() >= 20
    same = imaging.binary_model_mask(crop[:32, :32] + 1, 32)
    assert same.min() == 1.0  # equal size: every non-zero pixel, like the reference


def test_float_round_trip():
    image = _rng_image(8, 5)
    assert np.array_equal(
        np.asarray(imaging.from_float_array(imaging.to_float_array(image))), np.asarray(image)
    )


def _whole_box_blend(source, edit, mask, box):
    """The composite as the engine first computed it: the float32 formula over every pixel of the box."""
    x, y, w, h = box
    out = np.array(source)
    region = out[y : y + h, x : x + w]
    alpha = mask[y : y + h, x : x + w].astype(np.float32)[..., None] / 255.0
    blended = region[..., :3].astype(np.float32) * (1.0 - alpha) + np.asarray(edit).astype(np.float32) * alpha
    new = region.copy()
    new[..., :3] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if region.shape[2] == 4:
        new_alpha = region[..., 3].astype(np.float32) * (1.0 - alpha[..., 0]) + 255.0 * alpha[..., 0]
        new[..., 3] = np.clip(np.round(new_alpha), 0, 255).astype(np.uint8)
    touched = mask[y : y + h, x : x + w] > 0
    region[touched] = new[touched]
    return out


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_composite_and_patch_are_the_whole_box_formula_byte_for_byte(mode, seed):
    rng = np.random.default_rng(seed)
    width, height = 181, 143
    source = _rng_image(width, height, mode, seed=seed)
    mask = np.zeros((height, width), np.uint8)
    top, left = int(rng.integers(20, 60)), int(rng.integers(20, 80))
    area = rng.integers(0, 256, (50, 60)).astype(np.uint8)
    area[rng.random((50, 60)) < 0.3] = 255  # fully masked, partly masked and unmasked pixels mixed
    area[rng.random((50, 60)) < 0.2] = 0
    mask[top : top + 50, left : left + 60] = area
    box = imaging.choose_box(mask, 48)
    edit = _rng_image(box[2], box[3], seed=seed + 10)
    expected = _whole_box_blend(source, edit, mask, box)
    assert np.array_equal(np.asarray(imaging.composite(source, edit, mask, box)), expected)

    pixels = imaging.CandidatePixels(imaging.plan_blend(source, mask, box), source, edit)
    x, y, w, h = pixels.box
    assert (x, y, x + w, y + h) == imaging.bbox_of(mask)  # the patch covers only what the mask touches
    rgba = pixels.patch_rgba()
    assert rgba.flags["C_CONTIGUOUS"] and rgba.shape == (h, w, 4)
    assert np.array_equal(rgba[..., :3], expected[y : y + h, x : x + w, :3])
    assert np.array_equal(rgba[..., 3], mask[y : y + h, x : x + w])
    assert np.array_equal(np.asarray(pixels.image()), expected)
    outside = np.ones(mask.shape, bool)
    outside[y : y + h, x : x + w] = False
    assert np.array_equal(np.asarray(pixels.image())[outside], np.asarray(source)[outside])


def test_a_box_the_mask_does_not_touch_leaves_the_source():
    source = _rng_image(40, 30)
    mask = np.zeros((30, 40), np.uint8)
    mask[0, 0] = 255
    out = imaging.composite(source, _rng_image(20, 20), mask, (15, 5, 20, 20))
    assert imaging.plan_blend(source, mask, (15, 5, 20, 20)) is None
    assert np.array_equal(np.asarray(out), np.asarray(source))
    with pytest.raises(ValueError, match="edited crop"):
        imaging.composite(source, _rng_image(21, 20), mask, (15, 5, 20, 20))
