"""An edit in real Krita, the scripting API's way (run INSIDE Krita by tests/krita/scenario_runner.py;
test_krita_edit.py asserts on what each returns): candidates added as a group above the source, choose /
Accept / Discard, scribble mode, 16-bit and half-float documents, a dead engine restarted, a cancel mid-job,
and every refusal leaving the document as it was."""

import json
import os
import threading
from typing import Any, Dict, List

from tests.krita.scenario_tools import (
    PROMPT,
    TINY,
    app,
    candidate_checks,
    digests,
    expect_error,
    home,
    photo_doc,
    select,
    soft_ellipse,
    stack,
)

# ------------------------------------------------------------------ scenarios


def scenario_edit(engine) -> Dict[str, Any]:
    """Photo + soft ellipse + edit, then choose / Accept, then a second edit and Discard."""
    from blended_diffusion import api

    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    over = doc.createNode("Notes", "paintlayer")  # a pre-existing layer above, partly painted
    root.addChildNode(over, source)
    over.setPixelData(b"\x10\x20\xf0\xff" * (40 * 30), 10, 10, 40, 30)
    w, h = doc.width(), doc.height()
    mask = soft_ellipse(w, h, 300, 150, 70, 55)
    select(doc, mask)
    before = digests(doc)
    stack_before = stack(root)
    progress: List[List[int]] = []
    outcome = api.run_edit_and_wait(
        doc, PROMPT, layer=source, engine=engine, on_progress=lambda s, t, p: progress.append([s, t]), **TINY
    )
    result: Dict[str, Any] = {
        "stack_before": stack_before,
        "stack_after_edit": stack(root),
        "progress": progress,
        "region": list(outcome.request.region),
        "sent_mask_max": max(outcome.request.mask),
        "sent_mask_soft": len(set(outcome.request.mask)) > 2,
        "scores": [c.scores for c in outcome.response.candidates],
    }
    result.update(candidate_checks(doc, outcome, source, mask))
    after = digests(doc)
    result["preexisting_identical"] = all(after.get(uid) == value for uid, value in before.items())
    api.choose(outcome, 1)
    result["visible_after_choose"] = [n.visible() for n in outcome.layers]
    chosen_rgba = outcome.response.candidates[1].rgba
    kept = api.accept(outcome)
    result["stack_after_accept"] = stack(root)
    x, y, bw, bh = outcome.response.candidates[1].box
    from blended_diffusion import krita_api, pixels

    result["accepted_matches_candidate"] = (
        pixels.to_rgba8(bytes(kept.pixelData(x, y, bw, bh)), krita_api.layer_format(kept)) == chosen_rgba
    )
    result["preexisting_identical_after_accept"] = all(
        digests(doc).get(uid) == v for uid, v in before.items()
    )
    before2 = digests(doc)
    stack_before2 = stack(root)
    outcome2 = api.run_edit_and_wait(doc, "", layer=source, engine=engine, **TINY)  # removal: empty prompt
    result["removal_group_name"] = outcome2.group.name()
    api.discard(outcome2)
    result["discard_restores_stack"] = stack(root) == stack_before2
    result["discard_restores_pixels"] = digests(doc) == before2
    try:
        api.choose(outcome2, 0)
        result["choose_after_discard"] = "no error"
    except Exception as exc:  # noqa: BLE001
        result["choose_after_discard"] = type(exc).__name__
    doc.close()
    return result


def scenario_scribble(engine) -> Dict[str, Any]:
    from blended_diffusion import api

    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    strokes = doc.createNode("Strokes", "paintlayer")
    root.addChildNode(strokes, source)
    strokes.setPixelData(b"\x00\x00\xff\xff" * (20 * 12), 290, 144, 20, 12)  # pure red (BGRA) stroke
    w, h = doc.width(), doc.height()
    mask = soft_ellipse(w, h, 300, 150, 60, 45)
    select(doc, mask)
    before = digests(doc)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, scribble=True, **TINY)
    rx, ry, rw, _ = outcome.request.region
    i = ((150 - ry) * rw + (300 - rx)) * 4
    result = {
        "init_sent": outcome.request.init_rgba is not None,
        "init_pixel_at_stroke": list(outcome.request.init_rgba[i : i + 4])
        if outcome.request.init_rgba
        else None,
        "image_pixel_at_stroke": list(outcome.request.image_rgba[i : i + 4]),
        "stack_after_edit": stack(root),
        "preexisting_identical": all(digests(doc).get(u) == v for u, v in before.items()),
    }
    result.update(candidate_checks(doc, outcome, source, mask))
    doc.close()
    return result


def scenario_depth16(engine, depth: str = "U16") -> Dict[str, Any]:
    """A 16-bit integer (or half float) RGBA document; both keep alpha in bytes 6-7 of a pixel."""
    import struct

    from blended_diffusion import api

    w, h = 96, 64
    doc = app().createDocument(w, h, "deep", "RGBA", depth, "", 72.0)
    source = doc.rootNode().childNodes()[0]
    if depth == "U16":  # B, G, R, A
        data = b"".join(
            struct.pack("<4H", (x * 683) % 65536, (y * 1024) % 65536, 30000, 65535)
            for y in range(h)
            for x in range(w)
        )
    else:  # R, G, B, A as half floats, linear light
        data = b"".join(struct.pack("<4e", x / w, y / h, 0.3, 1.0) for y in range(h) for x in range(w))
    source.setPixelData(data, 0, 0, w, h)
    mask = soft_ellipse(w, h, 48, 32, 22, 18)
    select(doc, mask)
    before = digests(doc)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, **TINY)
    result = {"stack_after_edit": stack(doc.rootNode()), "doc_depth": doc.colorDepth()}
    result["preexisting_identical"] = all(digests(doc).get(u) == v for u, v in before.items())
    # Raw 16-bit check: alpha (bytes 6-7 of each pixel) is zero wherever the selection is zero.
    raw_bad = 0
    for node in outcome.layers:
        raw = bytes(node.pixelData(0, 0, w, h))
        raw_bad += sum(1 for i, m in enumerate(mask) if m == 0 and raw[8 * i + 6 : 8 * i + 8] != b"\0\0")
    result["raw_alpha_outside_bad"] = raw_bad
    result.update(candidate_checks(doc, outcome, source, mask))
    doc.close()
    return result


def scenario_depthf16(engine) -> Dict[str, Any]:
    return scenario_depth16(engine, "F16")


def scenario_restart(engine) -> Dict[str, Any]:
    """The engine dies between edits: the next edit restarts it and says so."""
    import signal

    from blended_diffusion import api

    doc = app().createDocument(48, 48, "small", "RGBA", "U8", "", 72.0)
    select(doc, soft_ellipse(48, 48, 24, 24, 14, 14))
    source = doc.rootNode().childNodes()[0]
    api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, **TINY)
    pid = engine._process.pid
    os.kill(pid, signal.SIGKILL)
    engine._process._proc.wait(10)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, **TINY)
    restarts, notice = engine.restarts, engine.last_notice
    # Cancel from the progress callback, as the docker's Cancel button does mid-job.
    before, stack_before = digests(doc), stack(doc.rootNode())
    cancel = threading.Event()
    steps: List[int] = []

    def on_progress(step: int, total: int, preview: Any) -> None:
        steps.append(step)
        if step >= 1:
            cancel.set()

    cancelled = expect_error(
        lambda: api.run_edit_and_wait(
            doc, PROMPT, layer=source, engine=engine, cancel=cancel, on_progress=on_progress, **TINY
        )
    )
    result = {
        "cancelled": cancelled,
        "cancel_unchanged": digests(doc) == before and stack(doc.rootNode()) == stack_before,
        "engine_alive_after_cancel": engine.running,
        "restarts": restarts,
        "notice": notice,
        "new_pid_differs": engine._process.pid != pid,
        "candidates": len(outcome.layers),
    }
    doc.close()
    return result


def scenario_refusals(engine) -> Dict[str, Any]:
    """Every refusal gives its message and leaves the document exactly as it was."""
    from blended_diffusion import api
    from blended_diffusion.engine_manager import EngineManager, EngineSettings

    from tests.krita.fake_engine import FakeManager

    result: Dict[str, Any] = {
        "no_document": expect_error(lambda: api.run_edit_and_wait(None, PROMPT, engine=engine))
    }
    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    group = doc.createGroupLayer("Group")
    root.addChildNode(group, source)
    vector = doc.createVectorLayer("Shapes")
    root.addChildNode(vector, group)
    before, stack_before = digests(doc), stack(root)

    def unchanged() -> bool:
        return digests(doc) == before and stack(root) == stack_before

    result["no_selection"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, **TINY)
    )
    result["no_selection_unchanged"] = unchanged()
    select(doc, soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55))
    before, stack_before = digests(doc), stack(root)
    result["group_layer"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=group, engine=engine)
    )
    result["vector_layer"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer_name="Shapes", engine=engine)
    )
    # Scribble mode needs a paint layer directly above the source; here a group is there.
    result["scribble_without_layer"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, scribble=True)
    )
    missing = EngineManager(EngineSettings(config_path="/nonexistent/engine.json"))
    result["not_installed"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=missing, **TINY)
    )
    # The real engine with the default preset and an empty weights folder: it cannot start.
    real_config = json.load(open(os.environ["BLENDED_DIFFUSION_CONFIG"], encoding="utf-8"))
    empty = os.path.join(home(), "empty-weights")
    os.makedirs(empty, exist_ok=True)
    no_weights = os.path.join(empty, "engine.json")
    with open(no_weights, "w", encoding="utf-8") as handle:
        json.dump(dict(real_config, models="default", weights_dir=empty), handle)
    manager = EngineManager(EngineSettings(config_path=no_weights))
    result["weights_missing"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=manager, **TINY)
    )
    manager.stop()
    from bridge.errors import EngineConnectionError

    crashed = FakeManager(
        EngineConnectionError("connection reset by peer"), crash_log="Traceback ...\nRuntimeError: boom"
    )
    result["crash"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=crashed, **TINY)
    )
    cancel = threading.Event()
    cancel.set()
    result["cancelled"] = expect_error(
        lambda: api.run_edit_and_wait(doc, PROMPT, layer=source, engine=FakeManager(), cancel=cancel, **TINY)
    )
    result["unchanged"] = unchanged()
    doc.close()
    cmyk = app().createDocument(32, 32, "cmyk", "CMYKA", "U8", "", 72.0)
    select(cmyk, b"\xff" * 1024)
    result["cmyk"] = expect_error(lambda: api.run_edit_and_wait(cmyk, PROMPT, engine=engine, **TINY))
    result["cmyk_layers"] = len(cmyk.rootNode().childNodes())
    cmyk.close()
    # Whole layer when nothing is selected: the engine gets an all-255 mask over the whole image.
    small = app().createDocument(40, 30, "small", "RGBA", "U8", "", 72.0)
    out = api.run_edit_and_wait(small, PROMPT, engine=FakeManager(), whole_layer=True, **TINY)
    result["whole_layer_region"] = list(out.request.region)
    result["whole_layer_mask_min"] = min(out.request.mask)
    small.close()
    return result
