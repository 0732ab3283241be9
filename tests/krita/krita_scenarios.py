"""Scenarios run INSIDE real Krita by kritarunner; each writes its findings to a JSON file that
test_krita_plugin.py asserts on. Invoked as::

    kritarunner -s krita_scenarios <result.json> <engine: real|fake> <scenario> [<scenario> ...]
"""

import hashlib
import json
import os
import threading
import traceback
from typing import Any, Callable, Dict, List

PROMPT = "a red hot air balloon"
TINY = dict(candidates=2, steps=10, skip_timesteps=5, aug_num=2, seed=3)
EXAMPLE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "resources", "examples", "lakeside.png"
)


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


def scenario_docker(engine) -> Dict[str, Any]:
    """The docker and its controller without a window: settings persist from the widgets, an edit runs
    on a worker thread and fills the candidate list, choosing and Accept work from the buttons."""
    import time

    from blended_diffusion import config, krita_api, pixels
    from blended_diffusion.qt import QApplication
    from blended_diffusion.ui import docker
    from fake_engine import FakeManager, dock_size, forbid_modal

    modal = forbid_modal()
    doc = photo_doc()
    krita_api.active_document = lambda: doc  # no view in kritarunner, so no active document
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    messages = ctl.message_log  # what the docker showed: messages and questions, never a dialog
    messages.clear()
    sizes = [dock_size(dock)]  # must never change (docs/troubleshooting.md, "Krita freezes")
    ctl.manager = FakeManager()
    dock.prompt.setText(PROMPT)
    dock.candidates.setValue(3)
    dock.steps.setValue(10)
    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        saved = json.load(handle)
    result: Dict[str, Any] = {"saved_candidates": saved["candidates"], "saved_prompt": saved["prompt"]}
    result["strength_tooltip"] = dock.strength.toolTip()
    dock.removal.setChecked(True)
    result["prompt_enabled_in_removal"] = dock.prompt.isEnabled()
    result["removal_prompt_sent"] = ctl.options_from_settings().prompt
    dock.removal.setChecked(False)
    dock.engine_box.setChecked(True)  # a collapsed (unchecked) group box disables its children
    result["engine_section_shown"] = dock.engine_body.isVisibleTo(dock)
    dock.advanced.setChecked(True)
    sizes.append(dock_size(dock))
    dock.engine_mode.setCurrentText("remote")
    result["host_enabled_remote"] = dock.host.isEnabled()
    result["device_enabled_remote"] = dock.device.isEnabled()
    dock.engine_mode.setCurrentText("local")
    ctl.manager = FakeManager()  # the engine mode change rebuilt nothing, but keep the fake explicit
    before, stack_before = digests(doc), stack(doc.rootNode())
    result["started_without_selection"] = ctl.start_edit(ctl.options_from_settings())
    result["no_selection_messages"] = list(messages)
    result["question_in_docker"] = [dock.question_row.isVisibleTo(dock), dock.status.text()]
    dock.no_button.click()
    result["question_after_no"] = dock.question_row.isVisibleTo(dock)
    result["unchanged_without_selection"] = digests(doc) == before and stack(doc.rootNode()) == stack_before
    select(doc, soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55))
    result["started"] = ctl.start_edit(ctl.options_from_settings())
    result["cancel_enabled_while_busy"] = dock.cancel_button.isEnabled()
    dock._on_progress(1, 3, pixels.encode_png(256, 256, b"\x80" * (256 * 256 * 3), 3))  # a live preview
    ctl.last_message = "a long message that would widen a docker that followed its contents " * 4
    ctl.changed.emit()
    sizes.append(dock_size(dock))
    deadline = time.time() + 60
    while ctl.worker is not None and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    result["state"] = ctl.flow.state
    result["status"] = dock.status.text()
    result["list"] = [dock.list.item(i).text() for i in range(dock.list.count())]
    result["tooltips"] = [dock.list.item(i).toolTip() for i in range(dock.list.count())]
    result["thumbnails"] = [not dock.list.item(i).icon().isNull() for i in range(dock.list.count())]
    result["progress"] = [dock.progress.value(), dock.progress.maximum()]
    sizes.append(dock_size(dock))
    dock.list.setCurrentRow(2)
    result["visible_after_click"] = [n.visible() for n in ctl.outcome.layers]
    dock.accept_button.click()
    result["stack_after_accept"] = stack(doc.rootNode())
    result["list_after_accept"] = dock.list.count()
    result["state_after_accept"] = ctl.flow.state
    sizes.append(dock_size(dock))
    result["sizes"] = sizes
    result["messages"] = list(messages)
    result["modal_calls"] = modal
    doc.setModified(False)
    doc.close()
    return result


def expect_error(call: Callable[[], Any]) -> List[str]:
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return [type(exc).__name__, str(exc)]
    return ["no error", ""]


def scenario_refusals(engine) -> Dict[str, Any]:
    """Every refusal gives its message and leaves the document exactly as it was."""
    from blended_diffusion import api
    from blended_diffusion.engine_manager import EngineManager, EngineSettings
    from fake_engine import FakeManager

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
    empty = os.path.join(os.path.dirname(result_path()), "empty-weights")
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


SCENARIOS = {
    "edit": scenario_edit,
    "scribble": scenario_scribble,
    "depth16": scenario_depth16,
    "depthf16": lambda engine: scenario_depth16(engine, "F16"),
    "restart": scenario_restart,
    "refusals": scenario_refusals,
    "docker": scenario_docker,
    "extend": lambda engine: __import__("extend_scenarios").scenario_extend(engine),
    "docker_extend": lambda engine: __import__("extend_scenarios").scenario_docker_extend(engine),
}


_RESULT_PATH = ""


def result_path() -> str:
    return _RESULT_PATH


def __main__(args):
    global _RESULT_PATH
    result_path, engine_kind, *names = list(args)
    _RESULT_PATH = result_path
    run_with_engine(result_path, engine_kind, names, SCENARIOS)


def run_with_engine(result_path: str, engine_kind: str, names, scenarios: Dict[str, Callable]) -> None:
    """Run the named scenarios on one engine ("real": the plugin's EngineManager, else the fake) and write
    each one's result, or its error and traceback, as JSON to ``result_path`` (the engine stopped first)."""
    results: Dict[str, Any] = {}
    if engine_kind == "real":
        from blended_diffusion.engine_manager import EngineManager, EngineSettings

        engine = EngineManager(EngineSettings(), log_path=os.environ.get("BD_ENGINE_LOG"))
    else:
        from fake_engine import FakeManager

        engine = FakeManager()
    try:
        for name in names:
            try:
                results[name] = scenarios[name](engine)
            except Exception as exc:  # noqa: BLE001 - reported to pytest, which fails with the traceback
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        engine.stop()
        with open(result_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
