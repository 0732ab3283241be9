"""One edit as plain data: what to send (built on the GUI thread from pixels Krita gave us), sending it
(on a worker thread), and the candidates that came back, placed in document coordinates."""

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import errors, pixels

Box = Tuple[int, int, int, int]  # x, y, width, height


def context_box_of(bbox: Tuple[int, int, int, int], width: int, height: int) -> Box:
    try:
        from bridge.geometry import context_box
    except ImportError as exc:
        raise errors.EngineNotInstalledError(
            f"the 'bridge' package is missing next to the plugin: {exc}"
        ) from exc
    return tuple(context_box(bbox, width, height))  # type: ignore[return-value]


def plan_region(
    selection: Optional[bytes], width: int, height: int, background: bool = False, whole_layer: bool = False
) -> Tuple[Box, bytes]:
    """(region, edit mask over the region): the context square around the area to edit.

    ``selection`` is Krita's one-byte-a-pixel selection over the whole image, or None when nothing is
    selected; with ``background`` the edit area is everything outside it."""
    if selection is None:
        if not whole_layer:
            raise errors.NoSelectionError()
        full = b"\xff" * (width * height)
    else:
        if len(selection) != width * height:
            raise ValueError(f"selection has {len(selection)} bytes for a {width}x{height} image")
        full = pixels.invert_mask(selection) if background else bytes(selection)
    bbox = pixels.mask_bbox(full, width, height)
    if bbox is None:
        raise errors.EmptySelectionError()
    region = context_box_of(bbox, width, height)
    return region, pixels.crop(full, width, height, 1, region)


@dataclass
class EditRequest:
    region: Box  # in document coordinates
    image_rgba: bytes  # source layer over the region, 8-bit RGBA
    mask: bytes  # edit mask over the region, one byte a pixel (soft values kept)
    params: Dict[str, Any]
    init_rgba: Optional[bytes] = None  # scribble mode: the visible image over the region
    # issue 39: (prompt, mask over the region) of each region; ``mask`` is then their union
    regions: List[Tuple[str, bytes]] = field(default_factory=list)

    def pngs(self) -> Tuple[bytes, Optional[bytes], Optional[bytes]]:
        """(image, mask, init) PNGs; no mask PNG for a regions job (the engine takes their union)."""
        _, _, w, h = self.region
        image = pixels.encode_png(w, h, self.image_rgba, 4)
        mask = None if self.regions else pixels.encode_png(w, h, self.mask, 1)
        init = pixels.encode_png(w, h, self.init_rgba, 4) if self.init_rgba is not None else None
        return image, mask, init

    def region_pngs(self) -> List[Tuple[bytes, str]]:
        """(mask PNG, prompt) of each region, as the bridge client sends them."""
        _, _, w, h = self.region
        return [(pixels.encode_png(w, h, mask, 1), prompt) for prompt, mask in self.regions]


def request_label(request: EditRequest, prompt: str) -> str:
    """What the candidates are named after: the prompt, or the regions' prompts."""
    if not request.regions:
        return prompt
    from .regions import label

    return label([p for p, _mask in request.regions])


@dataclass
class CandidatePatch:
    rank: int
    seed: int
    scores: Dict[str, float]
    box: Box  # document coordinates
    rgba: bytes  # 8-bit RGBA, alpha <= edit mask
    round: int = 1  # the group's round that made it (rounds.Round.number)


@dataclass
class EditResponse:
    candidates: List[CandidatePatch]
    notes: List[str] = field(default_factory=list)
    timing: Dict[str, Any] = field(default_factory=dict)  # the engine's updated estimates and step times


def place_candidates(request: EditRequest, reply: Dict[str, Any]) -> EditResponse:
    """Decode the reply's patches, offset them by the region origin and clamp alpha to the sent mask."""
    rx, ry, rw, rh = request.region
    placed: List[CandidatePatch] = []
    for item in reply.get("candidates", []):
        bx, by, bw, bh = (int(v) for v in item["box"])
        w, h, rgba = pixels.decode_png(item["png"])
        if (w, h) != (bw, bh) or bx < 0 or by < 0 or bx + bw > rw or by + bh > rh:
            raise errors.EngineJobFailed(
                "bad_reply", f"candidate patch {w}x{h} at {(bx, by)} does not fit the {rw}x{rh} region sent"
            )
        mask = pixels.crop(request.mask, rw, rh, 1, (bx, by, bw, bh))
        placed.append(
            CandidatePatch(
                rank=int(item.get("rank", len(placed) + 1)),
                seed=int(item.get("seed", 0)),
                scores={k: float(v) for k, v in dict(item.get("scores") or {}).items() if v is not None},
                box=(rx + bx, ry + by, bw, bh),
                rgba=pixels.limit_alpha(rgba, mask),
            )
        )
    if not placed:
        raise errors.EngineJobFailed("bad_reply", "the engine returned no candidates")
    placed.sort(key=lambda c: c.rank)
    timing = {key: reply[key] for key in ("estimates", "step_times") if isinstance(reply.get(key), dict)}
    return EditResponse(placed, [str(n) for n in reply.get("notes", [])], timing)


ProgressCallback = Callable[[int, int, Optional[bytes]], None]


def execute(
    request: EditRequest,
    client: Any,
    on_progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> EditResponse:
    """Send the request over the bridge and wait; safe to run on a worker thread (touches no Krita object)."""
    image_png, mask_png, init_png = request.pngs()

    def progress(info: Dict[str, Any], preview: Optional[bytes]) -> None:
        if on_progress is not None:
            on_progress(int(info.get("step", 0)), int(info.get("total", 0)), preview)

    if request.regions:
        regions = request.region_pngs()
        reply = client.edit(
            request.params, image_png, None, init_png, on_progress=progress, cancel=cancel, regions=regions
        )
    else:
        reply = client.edit(
            request.params, image_png, mask_png, init_png, on_progress=progress, cancel=cancel
        )
    if cancel is not None and cancel.is_set():
        raise errors.CancelledError()
    return place_candidates(request, reply)
