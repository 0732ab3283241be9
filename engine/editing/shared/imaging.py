"""Images of any size: load and convert, crop the context region, resize, composite, RGBA patches.

The authors' code squashes every image to 256x256. An editor must instead leave every pixel outside the
selection untouched, so the engine edits only a square context region around the mask (the same
``bridge.geometry.context_box`` the plugin uses), at the model's resolution, and composites the result back
with the soft mask: where the mask is 0 the output bytes are the source bytes.

This module needs only Pillow and numpy; tensors are made in ``editor.py``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from bridge.geometry import context_box
from bridge.limits import MAX_IMAGE_PIXELS
from engine.errors import InputError

Box = Tuple[int, int, int, int]  # x, y, width, height

# Refuse absurd inputs before decoding them (Pillow's own bomb check warns at ~89 MP): the one pixel limit
# the bridge enforces too (bridge/limits.py).
MAX_PIXELS = MAX_IMAGE_PIXELS
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
SIXTEEN_BIT_KEY = "blended_diffusion.16bit"


@dataclass
class Prepared:
    """A source image converted for editing, with what the conversion did, said in words."""

    rgb: Image.Image  # mode RGB, 8 bits per channel
    alpha: Optional[Image.Image]  # mode L, when the source had transparency
    notes: List[str] = field(default_factory=list)
    original: Optional[Image.Image] = None  # the source itself when it already was 8-bit RGB(A)

    @property
    def size(self) -> Tuple[int, int]:
        return self.rgb.size

    @property
    def mode(self) -> str:
        return "RGBA" if self.alpha is not None else "RGB"

    def full(self) -> Image.Image:
        """The converted source in its output mode (RGB or RGBA)."""
        if self.original is not None:
            return self.original
        if self.alpha is None:
            return self.rgb
        out = self.rgb.copy()
        out.putalpha(self.alpha)
        return out


def open_image(path: str, what: str = "image") -> Image.Image:
    """Open and fully decode an image file, turning every failure into one clear InputError."""
    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{what} path is not a file: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc}") from None
    return decode_image(data, f"{what} file {path}")


def decode_image(data: bytes, what: str = "image") -> Image.Image:
    """Decode image file bytes (PNG, JPEG, TIFF...), turning every failure into one clear InputError."""
    try:
        image = Image.open(io.BytesIO(data))
        # Pillow reduces 16-bit RGB(A) to 8 bits while decoding; remember it to say so later.
        sixteen = _sixteen_bit_rawmode(image)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read {what}: {exc}") from None
    if sixteen:
        image.info[SIXTEEN_BIT_KEY] = True
    return image


def _sixteen_bit_rawmode(image: Image.Image) -> bool:
    """True when Pillow decoded a 16-bit-per-channel file into 8 bits (it does so for RGB(A) PNGs)."""
    try:
        return any(";16" in str(tile[3]) for tile in getattr(image, "tile", []) or [])
    except (IndexError, TypeError):
        return False


def _to_8bit(array: np.ndarray, top: Optional[int] = None) -> np.ndarray:
    """16-bit or 32-bit integer / float samples to 8 bits, scaling rather than clipping."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.clip(array, 0.0, 1.0) * 255.0 if array.max(initial=0) <= 1.0 else np.clip(array, 0, 255)
        return np.round(scaled).astype(np.uint8)
    if top is None:
        top = 65535 if array.max(initial=0) > 255 else 255
    return np.round(np.clip(array, 0, top).astype(np.float64) * (255.0 / top)).astype(np.uint8)


def prepare_source(image: Image.Image, what: str = "image") -> Prepared:
    """Convert any PIL image to 8-bit RGB (+ alpha), saying what was converted."""
    notes: List[str] = []
    mode = image.mode
    if image.width < 1 or image.height < 1:
        raise InputError(f"{what} is empty ({image.width}x{image.height})")
    if image.width * image.height > MAX_PIXELS:
        raise InputError(
            f"{what} is too large: {image.width}x{image.height} = "
            f"{image.width * image.height / 1e6:.1f} Mpx, over the limit of {MAX_PIXELS / 1e6:.1f} Mpx"
        )
    sixteen = image.info.get(SIXTEEN_BIT_KEY) or _sixteen_bit_rawmode(image)
    if sixteen and mode in ("RGB", "RGBA"):
        notes.append(f"{what}: 16 bits per channel converted to 8 bits")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        sixteen = mode.startswith("I;16")
        grey = Image.fromarray(_to_8bit(np.asarray(image), 65535 if sixteen else None))
        notes.append(f"{what}: {'16-bit ' if sixteen else ''}greyscale ({mode}) converted to 8-bit RGB")
        return Prepared(grey.convert("RGB"), None, notes)
    if mode in ("1", "L"):
        notes.append(f"{what}: greyscale ({mode}) converted to RGB")
        return Prepared(image.convert("RGB"), None, notes)
    if mode == "LA":
        notes.append(f"{what}: greyscale with alpha converted to RGBA")
        return Prepared(image.convert("RGB"), image.getchannel("A"), notes)
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in image.info or mode == "PA"
        notes.append(f"{what}: palette image converted to {'RGBA' if has_alpha else 'RGB'}")
        if has_alpha:
            rgba = image.convert("RGBA")
            return Prepared(rgba.convert("RGB"), rgba.getchannel("A"), notes)
        return Prepared(image.convert("RGB"), None, notes)
    if mode == "RGB":
        return Prepared(image, None, notes, original=image)
    if mode == "RGBA":
        return Prepared(image.convert("RGB"), image.getchannel("A"), notes, original=image)
    # CMYK, YCbCr, LAB, HSV, RGBa, RGBX...: let Pillow convert, and say so.
    notes.append(f"{what}: {mode} converted to RGB")
    try:
        if "A" in mode or "a" in mode:
            rgba = image.convert("RGBA")
            return Prepared(rgba.convert("RGB"), rgba.getchannel("A"), notes)
        return Prepared(image.convert("RGB"), None, notes)
    except (ValueError, OSError) as exc:
        raise InputError(f"{what}: cannot convert mode {mode} to RGB: {exc}") from None


def mask_array(mask: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """The mask as uint8 0..255 (white = edit), checked against the image size.

    Any mode is accepted: RGB(A) masks use their luminance (an alpha channel is ignored, a selection mask
    is a greyscale picture), 16-bit masks are scaled to 8 bits.
    """
    if mask.size != tuple(size):
        raise InputError(
            f"mask size {mask.width}x{mask.height} differs from the image size {size[0]}x{size[1]}"
        )
    mode = mask.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = _to_8bit(np.asarray(mask), 65535 if mode.startswith("I;16") else None)
    elif mode == "L":
        array = np.asarray(mask)
    elif mode in ("1", "P", "RGB", "LA", "RGBA", "PA"):
        array = np.asarray(mask.convert("RGB" if mode != "1" else "L").convert("L"))
    else:
        array = np.asarray(mask.convert("L"))
    return np.ascontiguousarray(array, dtype=np.uint8)


def bbox_of(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(left, top, right, bottom) of the non-zero mask pixels, right/bottom exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def choose_box(mask: np.ndarray, model_size: int) -> Box:
    """The context region for this mask (bridge.geometry.context_box with the model size as minimum)."""
    bbox = bbox_of(mask)
    if bbox is None:
        raise InputError("the mask is empty: paint or select the region to edit (white = edit)")
    height, width = mask.shape
    return context_box(bbox, width, height, min_size=model_size)


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The box of an image; the image itself when the box is all of it (callers only read a crop)."""
    x, y, w, h = box
    if (x, y) == (0, 0) and image.size == (w, h):
        return image  # a big document's region sent whole: no copy of every pixel
    return image.crop((x, y, x + w, y + h))


def crop_array(array: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return array[y : y + h, x : x + w]


def resize_image(image: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """Lanczos, as the reference resizes its input (a no-op when the size already matches)."""
    if image.size == tuple(size):
        return image.copy()
    return image.resize(tuple(size), Image.Resampling.LANCZOS)


def binary_model_mask(mask_crop: np.ndarray, model_size: int) -> np.ndarray:
    """The diffusion mask at model resolution: 1 where any source pixel in the cell is non-zero.

    The reference binarises every non-zero pixel and resizes with nearest neighbour; at equal size this is
    the same, and when shrinking a large crop, taking any non-zero pixel of each cell keeps thin strokes that
    nearest neighbour would drop, so the soft mask never reaches outside the region the diffusion edits.
    """
    binary = (mask_crop > 0).astype(np.float32)
    if binary.shape == (model_size, model_size):
        return binary
    # BOX averages each output cell's source area, so "> 0" means "any source pixel there was masked".
    resized = np.asarray(Image.fromarray(binary).resize((model_size, model_size), Image.Resampling.BOX))
    return (resized > 1e-6).astype(np.float32)


def composite(source: Image.Image, edited_crop: Image.Image, mask: np.ndarray, box: Box) -> Image.Image:
    """Blend the edited crop (box size, RGB) into the source with the soft 0..255 mask.

    Pixels where the mask is 0 are copied, not recomputed, so they are byte-identical to the source; where
    it is 255 they are the edit. An alpha channel is kept where the mask is 0 and made opaque in proportion
    to the mask inside (the generated content is opaque).
    """
    plan = plan_blend(source, mask, box)
    if plan is None:
        if edited_crop.size != tuple(box[2:]):
            raise ValueError(f"edited crop is {edited_crop.size}, box is {box[2]}x{box[3]}")
        return source.copy()
    return full_image(plan, source, blend_patch(plan, edited_crop))


@dataclass
class BlendPlan:
    """What the composites of one job's candidates share, made once: the context box, the part of it the
    mask touches (``inner``, image coordinates: no pixel outside it can change), and there the soft mask,
    which pixels are fully and which partly masked, and the source's pixels."""

    box: Box
    inner: Box
    soft: np.ndarray  # uint8 (h, w) over inner
    opaque: np.ndarray  # bool (h, w, 1): mask == 255, where the composite is the edit itself
    rows: np.ndarray  # indices of the partly masked pixels (0 < mask < 255), the only ones blended
    cols: np.ndarray
    weight: np.ndarray  # float32 (n, 1): their mask / 255
    source: np.ndarray  # uint8 (h, w, 3 or 4): the source over inner, in its mode


def plan_blend(source: Image.Image, mask: np.ndarray, box: Box) -> Optional[BlendPlan]:
    """The BlendPlan of a source, its soft mask and the context box; None when the mask is 0 in the box."""
    x, y, w, h = box
    inner = bbox_of(crop_array(mask, box))
    if inner is None:
        return None
    left, top, right, bottom = inner
    absolute = (x + left, y + top, right - left, bottom - top)
    soft = np.ascontiguousarray(crop_array(mask, absolute))
    rows, cols = np.nonzero((soft > 0) & (soft < 255))
    return BlendPlan(
        box=box,
        inner=absolute,
        soft=soft,
        opaque=(soft == 255)[..., None],
        rows=rows,
        cols=cols,
        # the same float32 arithmetic as a whole-box blend would do per pixel: the same bytes
        weight=soft[rows, cols].astype(np.float32)[:, None] / 255.0,
        source=np.asarray(crop(source, absolute)),
    )


def blend_patch(plan: BlendPlan, edited_crop: Image.Image) -> np.ndarray:
    """The composite's RGB over ``plan.inner`` with the soft mask as alpha: uint8 (h, w, 4), C order.

    Issue 16: only the masked part of the box is touched, fully masked pixels are a masked copy of the
    edit and only the partly masked ones go through float32: a 2250x2250 box's float temporaries cost 1.3
    CPU-s per candidate.
    """
    bx, by, bw, bh = plan.box
    if edited_crop.size != (bw, bh):
        raise ValueError(f"edited crop is {edited_crop.size}, box is {bw}x{bh}")
    x, y, w, h = plan.inner
    piece = crop(edited_crop, (x - bx, y - by, w, h))
    edit = np.asarray(piece if piece.mode == "RGB" else piece.convert("RGB"))
    rgba = np.empty((h, w, 4), np.uint8)
    rgb = rgba[..., :3]
    rgb[...] = plan.source[..., :3]
    np.copyto(rgb, edit, where=plan.opaque)
    if plan.rows.size:
        rows, cols, alpha = plan.rows, plan.cols, plan.weight
        blended = rgb[rows, cols].astype(np.float32) * (1.0 - alpha) + edit[rows, cols] * alpha
        rgb[rows, cols] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    rgba[..., 3] = plan.soft
    return rgba


def full_image(plan: BlendPlan, source: Image.Image, patch_rgba: np.ndarray) -> Image.Image:
    """The whole composited image (the source's mode) from ``blend_patch``'s result.

    An alpha channel stays the source's where the mask is 0, is 255 where it is 255 and in between goes
    towards opaque in proportion to the mask.
    """
    region = plan.source.copy()
    region[..., :3] = patch_rgba[..., :3]
    if region.shape[2] == 4:
        alpha = region[..., 3]
        np.copyto(alpha, 255, where=plan.opaque[..., 0])
        if plan.rows.size:
            weight = plan.weight[:, 0]
            new_alpha = alpha[plan.rows, plan.cols].astype(np.float32) * (1.0 - weight) + 255.0 * weight
            alpha[plan.rows, plan.cols] = np.clip(np.round(new_alpha), 0, 255).astype(np.uint8)
    out = source.copy()
    out.paste(Image.fromarray(region), plan.inner[:2])
    return out


class CandidatePixels:
    """One candidate's pixels, each made when first asked for: the RGBA patch over the masked part (what
    the bridge sends) and the whole composited image (what the CLI saves; a bridge job never needs it)."""

    def __init__(self, plan: BlendPlan, source: Image.Image, edited_crop: Image.Image) -> None:
        self.plan, self._source, self._edited = plan, source, edited_crop
        self._patch: Optional[np.ndarray] = None
        self._image: Optional[Image.Image] = None

    @property
    def box(self) -> Box:
        return self.plan.inner

    def patch_rgba(self) -> np.ndarray:
        if self._patch is None:
            self._patch = blend_patch(self.plan, self._edited)
        return self._patch

    def patch(self) -> Image.Image:
        return Image.fromarray(self.patch_rgba())

    def image(self) -> Image.Image:
        if self._image is None:
            self._image = full_image(self.plan, self._source, self.patch_rgba())
        return self._image


def to_float_array(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 HxWx3 in [-1, 1] (the diffusion model's range)."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0


def from_float_array(array: np.ndarray) -> Image.Image:
    """float HxWx3 in [-1, 1] -> RGB PIL image (clamped, rounded)."""
    pixels = np.clip(np.round((np.asarray(array, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
