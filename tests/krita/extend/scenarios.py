"""Extend Canvas with Text inside real Krita (tests/krita/scenario_runner.py; test_krita_extend.py asserts):
through the API on the real engine, and through the docker's Extend section on a fake one."""

import hashlib
import json
from typing import Any, Dict, List

from tests.krita.scenario_tools import TINY, photo_doc, stack, walk

QUICK = dict(TINY, skip_timesteps=8)  # 2 steps a window: the photo's border needs some 80 windows


def layer_bytes(doc, node, box) -> bytes:
    x, y, w, h = box
    return bytes(node.pixelData(x, y, w, h))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def alpha_stats(data: bytes) -> List[int]:
    """[min, max] of the alpha bytes of 8-bit BGRA data."""
    alphas = data[3::4]
    return [min(alphas), max(alphas)] if alphas else [0, 0]


def scenario_extend(engine) -> Dict[str, Any]:
    """Extend the photo left ("hell") and right ("heaven"), check every candidate and the pre-existing
    layers, Accept; then extend top and bottom and Discard; then refusals that change nothing."""
    from blended_diffusion import api, extending

    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    notes = doc.createNode("Notes", "paintlayer")
    root.addChildNode(notes, source)
    notes.setPixelData(b"\x10\x20\xf0\xff" * (40 * 30), 0, 0, 40, 30)  # touches the left border
    w, h = doc.width(), doc.height()
    full = (0, 0, w, h)
    before_layers = {n.name(): layer_bytes(doc, n, full) for n in (source, notes)}
    doc.refreshProjection()
    projection = bytes(doc.pixelData(0, 0, w, h))
    stack_before = stack(root)
    progress: List[List[int]] = []
    left, right = 16, 13  # one column of windows a side: the photo is 384 px tall
    outcome = api.run_extend_and_wait(
        doc,
        "a landscape",
        left=left,
        right=right,
        side_prompts={"left": "hell", "right": "heaven"},
        engine=engine,
        on_progress=lambda s, t, p: progress.append([s, t]),
        **QUICK,
    )
    cw, ch = doc.width(), doc.height()
    old_box = (left, 0, w, h)
    result: Dict[str, Any] = {
        "size_before": [w, h],
        "size_after": [cw, ch],
        "stack_before": stack_before,
        "stack_after": stack(root),
        "progress_last": progress[-1] if progress else None,
        "group": outcome.group.name(),
        "names": outcome.names,
        "preexisting_at_offset": all(
            layer_bytes(doc, n, old_box) == before_layers[n.name()] for n in (source, notes)
        ),
        "preexisting_new_area_alpha": [
            alpha_stats(layer_bytes(doc, n, (0, 0, left, ch)) + layer_bytes(doc, n, (left + w, 0, right, ch)))
            for n in (source, notes)
        ],
    }
    candidates = []
    for index, node in enumerate(outcome.layers):
        api.choose(outcome, index)
        shown = bytes(doc.pixelData(left, 0, w, h))
        candidates.append(
            {
                "bounds": [node.bounds().width(), node.bounds().height()],
                "alpha_over_original": alpha_stats(layer_bytes(doc, node, old_box)),
                "alpha_left": alpha_stats(layer_bytes(doc, node, (0, 0, left, ch))),
                "alpha_right": alpha_stats(layer_bytes(doc, node, (left + w, 0, right, ch))),
                "projection_original_identical": shown == projection,
                "new_area_sha": sha(layer_bytes(doc, node, (0, 0, left, ch))),
            }
        )
    result["candidates"] = candidates
    chosen = outcome.response.candidates[1].rgba
    kept = api.accept(outcome)
    from blended_diffusion import krita_api, pixels

    result["stack_after_accept"] = stack(root)
    result["size_after_accept"] = [doc.width(), doc.height()]
    result["accepted_matches_candidate"] = (
        pixels.to_rgba8(layer_bytes(doc, kept, (0, 0, cw, ch)), krita_api.layer_format(kept)) == chosen
    )

    # A second extension, discarded: the canvas and the stack return to what they were.
    size2 = [doc.width(), doc.height()]
    stack2 = stack(root)
    layers2 = {n.uniqueId().toString(): sha(layer_bytes(doc, n, (0, 0, *size2))) for n in walk(root)}
    outcome2 = api.run_extend_and_wait(doc, "grass", bottom=9, engine=engine, **QUICK)
    result["size_during_second"] = [doc.width(), doc.height()]
    result["second_group"] = outcome2.group.name()
    api.discard(outcome2)
    result["discard_size"] = [doc.width(), doc.height()]
    result["discard_restores_stack"] = stack(root) == stack2
    result["discard_restores_pixels"] = {
        n.uniqueId().toString(): sha(layer_bytes(doc, n, (0, 0, *size2))) for n in walk(root)
    } == layers2
    try:
        api.choose(outcome2, 0)
        result["choose_after_discard"] = "no error"
    except Exception as exc:  # noqa: BLE001
        result["choose_after_discard"] = type(exc).__name__

    # Refusals: one clear message each, nothing changed.
    refusals = {}
    for name, call in (
        ("no side", lambda: api.run_extend_and_wait(doc, "x", engine=engine, **QUICK)),
        ("negative", lambda: api.run_extend_and_wait(doc, "x", left=-4, engine=engine, **QUICK)),
        (
            "prompt without side",
            lambda: api.run_extend_and_wait(doc, "x", right=5, side_prompts={"top": "sky"}, engine=engine),
        ),
    ):
        try:
            call()
            refusals[name] = "no error"
        except extending.BadExtensionError as exc:
            refusals[name] = str(exc)
    result["refusals"] = refusals
    result["refusals_changed_nothing"] = stack(root) == stack2 and [doc.width(), doc.height()] == size2
    doc.close()
    return result


def scenario_docker_extend(engine) -> Dict[str, Any]:
    """The docker's Extend section with a fake engine: sides and prompts persist, the button grows the
    canvas and fills the candidate list, Discard takes the canvas back."""
    import time

    from blended_diffusion import config, krita_api
    from blended_diffusion.qt import QApplication
    from blended_diffusion.ui import docker

    from tests.krita.fake_engine import FakeManager, forbid_modal

    modal = forbid_modal()
    doc = photo_doc()
    krita_api.active_document = lambda: doc
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    messages = ctl.message_log
    messages.clear()
    ctl.manager = FakeManager()
    dock.prompt.setText("a meadow")
    dock.candidates.setValue(2)
    dock.extend_box.setChecked(True)
    dock.extend_pixels["right"].setValue(0)
    dock.extend_pixels["left"].setValue(24)
    dock.extend_pixels["bottom"].setValue(10)
    dock.extend_prompts["left"].setText("a castle")
    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        saved = json.load(handle)
    result: Dict[str, Any] = {
        "saved": [saved["extend_left"], saved["extend_bottom"], saved["extend_prompt_left"]],
        "section_shown": dock.extend_body.isVisibleTo(dock),
    }
    size = [doc.width(), doc.height()]
    result["started"] = dock.extend_button.isEnabled() and ctl.start_extend(
        ctl.options_from_settings(), *ctl.extend_settings()
    )
    deadline = time.time() + 60
    while ctl.worker is not None and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    sent = ctl.manager.client.requests[-1][0]
    result["sent"] = {k: sent.get(k) for k in ("left", "right", "top", "bottom", "side_prompts", "prompt")}
    result["size_before"] = size
    result["size_review"] = [doc.width(), doc.height()]
    result["state"] = ctl.flow.state
    result["list"] = [dock.list.item(i).text() for i in range(dock.list.count())]
    result["thumbnails"] = [not dock.list.item(i).icon().isNull() for i in range(dock.list.count())]
    dock.discard_button.click()
    result["size_after_discard"] = [doc.width(), doc.height()]
    result["list_after_discard"] = dock.list.count()
    result["messages"] = list(messages) + modal
    doc.setModified(False)
    doc.close()
    return result
