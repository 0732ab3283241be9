"""Extending the canvas with text (outpainting, paper section 5) as plain data: the request (the visible
image and how many pixels each side grows), sending it on a worker thread, and the candidates placed on the
grown canvas. Krita itself is touched only by api.py through krita_api.py."""

import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from bridge.limits import DEFAULT_LIMITS, JobLimits, LimitError, check_pixels

from . import errors, pixels
from .editing import CandidatePatch, EditResponse, ProgressCallback

SIDES = ("left", "right", "top", "bottom")
MAX_SIDE = DEFAULT_LIMITS.max_extend_side  # pixels one side may grow by (bridge/limits.py)


class BadExtensionError(errors.PluginError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"Cannot extend the canvas: {detail}.")


def check_sides(
    sides: Mapping[str, Any],
    side_prompts: Optional[Mapping[str, str]] = None,
    limits: JobLimits = DEFAULT_LIMITS,
    image_size: Optional[Tuple[int, int]] = None,
) -> Dict[str, int]:
    """The four side sizes as ints, refusing negative or non-integer sizes, sizes over the engine's limit,
    no side at all, a prompt for a side that does not grow, and (given the image's size) a grown canvas
    over the engine's pixel limit."""
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        raise BadExtensionError(f"unknown side {unknown[0]!r} (sides: {', '.join(SIDES)})")
    checked: Dict[str, int] = {}
    for side in SIDES:
        value = sides.get(side, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadExtensionError(f"the {side} size must be a whole number of pixels, not {value!r}")
        if not 0 <= value <= limits.max_extend_side:
            raise BadExtensionError(
                f"the {side} size must be between 0 and {limits.max_extend_side} pixels, not {value}"
            )
        checked[side] = value
    if not any(checked.values()):
        raise BadExtensionError("give at least one side a size in pixels")
    for side in side_prompts or {}:
        if side not in SIDES:
            raise BadExtensionError(f"unknown side {side!r} for a prompt (sides: {', '.join(SIDES)})")
        if checked[side] == 0:
            raise BadExtensionError(f"there is a prompt for the {side} side, but it does not grow")
    if image_size is not None:
        width = image_size[0] + checked["left"] + checked["right"]
        height = image_size[1] + checked["top"] + checked["bottom"]
        try:  # the engine would refuse it: say so before the image is read and sent
            check_pixels("grown canvas", width, height, limits)
        except LimitError as exc:
            raise BadExtensionError(str(exc)) from None
    return checked


@dataclass
class ExtendRequest:
    size: Tuple[int, int]  # the document's size before growing
    sides: Dict[str, int]
    image_rgba: bytes  # the visible image (the projection), 8-bit RGBA
    params: Dict[str, Any]  # EditParams fields plus the sides, side_prompts and blend_band
    side_prompts: Dict[str, str] = field(default_factory=dict)

    @property
    def canvas_size(self) -> Tuple[int, int]:
        width, height = self.size
        s = self.sides
        return width + s["left"] + s["right"], height + s["top"] + s["bottom"]

    @property
    def offset(self) -> Tuple[int, int]:
        """Where the old image's top-left lands on the grown canvas."""
        return self.sides["left"], self.sides["top"]

    def resize_args(self) -> Tuple[int, int, int, int]:
        """Krita's resizeImage(x, y, w, h) that grows the canvas (x, y: the new origin in old coordinates)."""
        width, height = self.canvas_size
        return -self.sides["left"], -self.sides["top"], width, height

    def restore_args(self) -> Tuple[int, int, int, int]:
        """resizeImage arguments that take the grown canvas back to the old size and place."""
        return self.sides["left"], self.sides["top"], self.size[0], self.size[1]

    def original_mask(self) -> bytes:
        """One byte a canvas pixel: 0 over the old image, 255 over the new area."""
        width, height = self.canvas_size
        left, top = self.offset
        old_w, old_h = self.size
        new_row = b"\xff" * width
        old_row = b"\xff" * left + b"\x00" * old_w + b"\xff" * (width - left - old_w)
        return new_row * top + old_row * old_h + new_row * (height - top - old_h)

    def label(self, prompt: str) -> str:
        """What the group layer is named after: the prompt, or the side prompts when every side has one."""
        grown = [side for side in SIDES if self.sides[side]]
        if all(side in self.side_prompts for side in grown):
            return " | ".join(f"{side}: {self.side_prompts[side]}" for side in grown)
        return prompt


def make_request(
    size: Tuple[int, int],
    image_rgba: bytes,
    params: Dict[str, Any],
    sides: Mapping[str, Any],
    side_prompts: Optional[Mapping[str, str]] = None,
    blend_band: int = 0,
    limits: JobLimits = DEFAULT_LIMITS,
) -> ExtendRequest:
    checked = check_sides(sides, side_prompts, limits, size)
    prompts = {side: str(text).strip() for side, text in dict(side_prompts or {}).items()}
    if isinstance(blend_band, bool) or not isinstance(blend_band, int) or blend_band < 0:
        raise BadExtensionError(f"the blend band must be a whole number of pixels >= 0, not {blend_band!r}")
    width, height = size
    if len(image_rgba) != width * height * 4:
        raise ValueError(f"image has {len(image_rgba)} bytes for a {width}x{height} RGBA image")
    full = dict(params, **checked, side_prompts=prompts, blend_band=blend_band)
    return ExtendRequest((width, height), checked, image_rgba, full, prompts)


def place_candidates(request: ExtendRequest, reply: Dict[str, Any]) -> EditResponse:
    """Decode the reply's canvases, check them against the grown size, and (without a blend band) clamp
    their alpha to the new area so that the old pixels show through byte for byte."""
    width, height = request.canvas_size
    if list(reply.get("canvas_size", [])) != [width, height] or list(reply.get("offset", [])) != list(
        request.offset
    ):
        raise errors.EngineJobFailed(
            "bad_reply",
            f"the engine extended to {reply.get('canvas_size')} at {reply.get('offset')}, expected "
            f"{[width, height]} at {list(request.offset)}",
        )
    new_area = request.original_mask() if not request.params.get("blend_band") else None
    placed = []
    for item in reply.get("candidates", []):
        w, h, rgba = pixels.decode_png(item["png"])
        if (w, h) != (width, height):
            raise errors.EngineJobFailed("bad_reply", f"candidate {w}x{h} is not the {width}x{height} canvas")
        placed.append(
            CandidatePatch(
                rank=int(item.get("rank", len(placed) + 1)),
                seed=int(item.get("seed", 0)),
                scores={k: float(v) for k, v in dict(item.get("scores") or {}).items() if v is not None},
                box=(0, 0, width, height),
                rgba=pixels.limit_alpha(rgba, new_area) if new_area is not None else rgba,
            )
        )
    if not placed:
        raise errors.EngineJobFailed("bad_reply", "the engine returned no candidates")
    placed.sort(key=lambda c: c.rank)
    return EditResponse(placed, [str(n) for n in reply.get("notes", [])])


def execute(
    request: ExtendRequest,
    client: Any,
    on_progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> EditResponse:
    """Send the request over the bridge and wait; safe on a worker thread (touches no Krita object)."""
    width, height = request.size
    image_png = pixels.encode_png(width, height, request.image_rgba, 4)

    def progress(info: Dict[str, Any], preview: Optional[bytes]) -> None:
        if on_progress is not None:
            on_progress(int(info.get("step", 0)), int(info.get("total", 0)), preview)

    reply = client.extend(request.params, image_png, on_progress=progress, cancel=cancel)
    if cancel is not None and cancel.is_set():
        raise errors.CancelledError()
    return place_candidates(request, reply)
