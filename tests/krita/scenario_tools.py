"""What the scenarios run INSIDE real Krita share: the document, its layers and selection, and the checks
every edit's candidates get (tests/krita/scenario_runner.py runs the scenarios)."""

import hashlib
import os
from typing import Any, Callable, Dict, List

PROMPT = "a red hot air balloon"
TINY = dict(candidates=2, steps=10, skip_timesteps=5, aug_num=2, seed=3)
EXAMPLE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "resources", "examples", "lakeside.png"
)


def home() -> str:
    """The test's throw-away HOME, where a scenario leaves files for its test to read."""
    return os.environ["HOME"]


def app():
    from krita import Krita

    return Krita.instance()


def walk(node) -> List[Any]:
    out = []
    for child in reversed(node.childNodes()):
        out.append(child)
        out.extend(walk(child))
    return out


def stack(node) -> List[Any]:
    """Layer stack, top first: [name, type, visible, children]."""
    return [[c.name(), c.type(), c.visible(), stack(c)] for c in reversed(node.childNodes())]


def digests(doc) -> Dict[str, List[str]]:
    w, h = doc.width(), doc.height()
    return {
        n.uniqueId().toString(): [n.name(), hashlib.sha256(bytes(n.pixelData(0, 0, w, h))).hexdigest()]
        for n in walk(doc.rootNode())
    }


def soft_ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float) -> bytes:
    """255 inside 0.7 of the radii, falling linearly to 0 at the ellipse edge: a soft selection."""
    out = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            r = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) ** 0.5
            out[y * w + x] = 255 if r <= 0.7 else (0 if r >= 1.0 else int(255 * (1.0 - r) / 0.3))
    return bytes(out)


def select(doc, mask: bytes) -> None:
    from krita import Selection

    sel = Selection()
    sel.setPixelData(mask, 0, 0, doc.width(), doc.height())
    doc.setSelection(sel)


def photo_doc():
    doc = app().openDocument(os.path.abspath(EXAMPLE))
    if doc is None:
        raise RuntimeError(f"Krita could not open {EXAMPLE}")
    return doc


def rgba_of(doc, node) -> bytes:
    from blended_diffusion import krita_api, pixels

    return pixels.to_rgba8(
        bytes(node.pixelData(0, 0, doc.width(), doc.height())), krita_api.layer_format(node)
    )


def candidate_checks(doc, outcome, source, mask: bytes) -> Dict[str, Any]:
    """Per candidate: alpha outside the selection, composite over the source vs the source, pixels changed."""
    src = rgba_of(doc, source)
    found = []
    for node in outcome.layers:
        cand = rgba_of(doc, node)
        outside_bad = inside_changed = 0
        for i, m in enumerate(mask):
            a = cand[4 * i + 3]
            comp = [(cand[4 * i + c] * a + src[4 * i + c] * (255 - a) + 127) // 255 for c in range(3)]
            if m == 0:
                if a != 0 or comp != list(src[4 * i : 4 * i + 3]):
                    outside_bad += 1
            elif a and comp != list(src[4 * i : 4 * i + 3]):
                inside_changed += 1
        found.append(
            {
                "name": node.name(),
                "depth": node.colorDepth(),
                "bytes": len(bytes(node.pixelData(0, 0, doc.width(), doc.height()))),
                "outside_bad": outside_bad,
                "inside_changed": inside_changed,
            }
        )
    # Krita's own compositing: with the group shown the image equals the image without it outside the mask.
    doc.refreshProjection()
    shown = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    outcome.group.setVisible(False)
    doc.refreshProjection()
    hidden = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    outcome.group.setVisible(True)
    doc.refreshProjection()
    bpp = len(shown) // (doc.width() * doc.height())
    projection_bad = sum(
        1
        for i, m in enumerate(mask)
        if m == 0 and shown[i * bpp : (i + 1) * bpp] != hidden[i * bpp : (i + 1) * bpp]
    )
    return {"candidates": found, "projection_outside_bad": projection_bad}


def expect_error(call: Callable[[], Any]) -> List[str]:
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return [type(exc).__name__, str(exc)]
    return ["no error", ""]
