"""Regions in real Krita (issue 39), the scripting API's way (run INSIDE Krita by
tests/krita/scenario_runner.py; test_krita_regions.py asserts on what each returns): the edited layer's
selection masks, each named by its prompt, edited in one job into one group; a hidden mask skipped."""

from typing import Any, Dict, List

from tests.krita.scenario_tools import (
    TINY,
    candidate_checks,
    digests,
    photo_doc,
    rgba_of,
    soft_ellipse,
    stack,
)


def _add_region(doc, layer, name: str, mask: bytes, visible: bool = True):
    from krita import Selection

    node = doc.createSelectionMask(name)
    selection = Selection()
    selection.setPixelData(mask, 0, 0, doc.width(), doc.height())
    node.setSelection(selection)
    layer.addChildNode(node, None)
    node.setVisible(visible)
    return node


def scenario_regions(engine) -> Dict[str, Any]:
    """Two visible selection masks and a hidden one on the photo's layer: one edit, More, then Accept."""
    from blended_diffusion import api, krita_api

    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    w, h = doc.width(), doc.height()
    kite = soft_ellipse(w, h, 0.3 * w, 0.35 * h, 40, 30)
    balloon = soft_ellipse(w, h, 0.7 * w, 0.35 * h, 40, 30)
    sky = soft_ellipse(w, h, 0.5 * w, 0.8 * h, 30, 20)
    _add_region(doc, source, "a red kite", kite)
    _add_region(doc, source, "Selection Mask 2", balloon)  # Krita's own name: the docker's prompt
    _add_region(doc, source, "a calm sky", sky, visible=False)
    union = bytes(map(max, kite, balloon))
    before = digests(doc)
    stack_before = stack(root)
    listed = krita_api.region_specs(source)
    outcome = api.run_edit_and_wait(doc, "a hot-air balloon", layer=source, engine=engine, **TINY)
    result: Dict[str, Any] = {
        "listed": [[s.name, s.visible] for s in listed],
        "stack_before": stack_before,
        "stack_after_edit": stack(root),
        "sent_regions": [prompt for prompt, _mask in outcome.request.regions],
        "sent_mask_is_union": outcome.request.mask == _crop(union, w, outcome.request.region),
        "group_name": outcome.group.name(),
        "notes": outcome.notes,
    }
    result.update(candidate_checks(doc, outcome, source, union))
    src = rgba_of(doc, source)
    sky_touched = 0
    for node in outcome.layers:
        cand = rgba_of(doc, node)
        sky_touched += sum(1 for i, m in enumerate(sky) if m and cand[4 * i + 3])
    result["hidden_region_touched"] = sky_touched
    result["preexisting_identical"] = all(digests(doc).get(uid) == value for uid, value in before.items())
    added = api.more(outcome)
    result["more_added"] = added
    result["candidates_after_more"] = len(outcome.layers)
    result["more_outside_bad"] = sum(
        c["outside_bad"] for c in candidate_checks(doc, outcome, source, union)["candidates"]
    )
    kept = api.accept(outcome)
    result["stack_after_accept"] = stack(root)
    result["accepted_name"] = kept.name()
    result["source_unchanged"] = rgba_of(doc, source) == src
    return result


def _crop(mask: bytes, width: int, box) -> bytes:
    x, y, w, h = box
    return b"".join(mask[(y + r) * width + x : (y + r) * width + x + w] for r in range(h))


def scenario_regions_all_hidden(engine) -> Dict[str, Any]:
    """Every mask hidden: the edit is the selection's, as before regions."""
    from blended_diffusion import api

    from tests.krita.scenario_tools import select

    doc = photo_doc()
    source = doc.rootNode().childNodes()[0]
    w, h = doc.width(), doc.height()
    _add_region(doc, source, "a red kite", soft_ellipse(w, h, 0.3 * w, 0.35 * h, 40, 30), visible=False)
    selection = soft_ellipse(w, h, 0.6 * w, 0.5 * h, 50, 40)
    select(doc, selection)
    outcome = api.run_edit_and_wait(doc, "a red hot air balloon", layer=source, engine=engine, **TINY)
    found: List[Any] = candidate_checks(doc, outcome, source, selection)["candidates"]
    return {
        "sent_regions": len(outcome.request.regions),
        "group_name": outcome.group.name(),
        "outside_bad": sum(c["outside_bad"] for c in found),
    }


def scenario_regions_panel(engine) -> Dict[str, Any]:
    """The docker's Regions list on a layer with two masks, one hidden: its rows, and a prompt edited there
    renaming the mask; the active mask's layer is the one listed."""
    from blended_diffusion import krita_api
    from blended_diffusion.qt import Qt
    from blended_diffusion.ui.regions_panel import RegionsPanel

    doc = photo_doc()
    source = doc.rootNode().childNodes()[0]
    w, h = doc.width(), doc.height()
    kite = _add_region(doc, source, "a red kite", soft_ellipse(w, h, 0.3 * w, 0.35 * h, 40, 30))
    _add_region(doc, source, "a calm sky", soft_ellipse(w, h, 0.5 * w, 0.8 * h, 30, 20), visible=False)
    saved = krita_api.active_document, krita_api.active_node
    try:
        krita_api.active_document = lambda: doc  # no view in kritarunner: no active document or node
        krita_api.active_node = lambda _doc: kite  # the user is painting the kite's mask
        panel = RegionsPanel()
        panel.poll()
        rows = [panel.list.item(i) for i in range(panel.list.count())]
        result: Dict[str, Any] = {
            "rows": [item.text() for item in rows],
            "hidden_tip": rows[1].toolTip() if len(rows) > 1 else None,
            "editable": all(bool(item.flags() & Qt.ItemFlag.ItemIsEditable) for item in rows),
            "summary": panel.summary.text(),
        }
        rows[0].setText("a green kite")  # as a double-click and typing would
        result["mask_names_after_edit"] = [m.name() for m in krita_api.region_masks(source)]
        panel.poll()
        result["rows_after_poll"] = [panel.list.item(i).text() for i in range(panel.list.count())]
        group = doc.createGroupLayer("BD: a green kite")  # as an edit leaves it: its group active
        doc.rootNode().addChildNode(group, source)
        candidate = doc.createNode("#1 match 50%", "paintlayer")
        group.addChildNode(candidate, None)
        for active in (group, candidate):
            krita_api.active_node = lambda _doc, node=active: node
            panel.poll()
            result.setdefault("rows_from_group", []).append(
                [panel.list.item(i).text() for i in range(panel.list.count())]
            )
        krita_api.active_node = lambda _doc: None
        panel.poll()
        result["summary_without_layer"] = panel.summary.text()
    finally:  # the patches must not outlive this scenario: later ones share the Krita process
        krita_api.active_document, krita_api.active_node = saved
    return result
