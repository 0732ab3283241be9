"""Test-only Krita plugin: in the real GUI (undo needs a window and a view), grow a canvas the way the
extension does, then trigger Krita's own Undo until the canvas is back; write what happened to
$BD_UNDO_OUT and exit. tests/krita/undo/test_krita_undo.py runs it under xvfb-run."""

import json
import os
import traceback

from blended_diffusion.qt import QApplication, QTimer
from krita import Extension, Krita


def _probe() -> dict:
    from blended_diffusion import api, editing, extending

    app = Krita.instance()
    doc = app.createDocument(20, 10, "undo", "RGBA", "U8", "", 72.0)
    app.activeWindow().addView(doc)
    layer = doc.rootNode().childNodes()[0]
    original = bytes(range(256)) * 3 + bytes(32)  # 800 bytes = 20 x 10 BGRA pixels
    layer.setPixelData(original, 0, 0, 20, 10)
    doc.waitForDone()
    report = {"layers_before": len(doc.rootNode().childNodes())}
    request = extending.make_request((20, 10), bytes(800), {}, {"left": 5, "top": 3})
    cw, ch = request.canvas_size
    patch = bytes([10, 200, 30, 255]) * (cw * ch)
    candidates = [editing.CandidatePatch(r, r, {"combined": 0.5}, (0, 0, cw, ch), patch) for r in (1, 2)]
    outcome = api.apply_extend(doc, request, editing.EditResponse(candidates), "sky")
    report["size_after_extend"] = [doc.width(), doc.height()]
    report["layer_at_offset"] = bytes(layer.pixelData(5, 3, 20, 10)) == original
    report["group"] = outcome.group.name()
    undo = app.action("edit_undo")
    sizes = []
    for _ in range(8):
        undo.trigger()
        QApplication.processEvents()
        doc.waitForDone()
        sizes.append([doc.width(), doc.height()])
        if sizes[-1] == [20, 10]:
            break
    report["sizes_while_undoing"] = sizes
    report["layer_back"] = bytes(layer.pixelData(0, 0, 20, 10)) == original
    report["layers_after_undo"] = len(doc.rootNode().childNodes())
    doc.setModified(False)
    return report


def _names(node) -> list:
    """The layer stack, top first: a name, or [group name, its stack]."""
    return [
        [c.name(), _names(c)] if c.type() == "grouplayer" else c.name() for c in reversed(node.childNodes())
    ]


def _undo_until(app, doc, stack: list, limit: int = 8) -> int:
    """Trigger Krita's Undo until the layer stack is ``stack`` again: the number of steps (-1: never)."""
    undo = app.action("edit_undo")
    for step in range(1, limit + 1):
        undo.trigger()
        QApplication.processEvents()
        doc.waitForDone()
        if _names(doc.rootNode()) == stack:
            return step
    return -1


def _probe_rounds() -> dict:
    """How many of Krita's undo steps an edit, a More round and Accept take; the outcome follows Undo."""
    from blended_diffusion import api, editing, iterating, rounds

    app = Krita.instance()
    doc = app.createDocument(8, 8, "rounds", "RGBA", "U8", "", 72.0)
    app.activeWindow().addView(doc)
    source = doc.rootNode().childNodes()[0]
    params = {"prompt": "cat", "seed": 1, "batch_size": 2, "iterations_num": 1}
    request = editing.EditRequest((0, 0, 8, 8), bytes(256), b"\xff" * 64, params)

    def response(seed: int, distances) -> editing.EditResponse:
        patch = bytes([seed * 20, 0, 0, 255]) * 64
        return editing.EditResponse(
            [
                editing.CandidatePatch(i + 1, seed + i, {"combined": d}, (0, 0, 8, 8), patch)
                for i, d in enumerate(distances)
            ]
        )

    empty = _names(doc.rootNode())
    report = {}
    outcome = api.apply(doc, source, source, request, response(1, [0.5, 0.7]), "cat")
    doc.waitForDone()
    after_edit = _names(doc.rootNode())
    report["undo_edit_alone"] = _undo_until(app, doc, empty)
    app.action("edit_redo").trigger()
    QApplication.processEvents()
    doc.waitForDone()
    outcome.group = doc.rootNode().childNodes()[-1]  # the redone group (Redo brings a new wrapper)
    outcome.layers = list(reversed(outcome.group.childNodes()))
    report["redo_edit"] = _names(doc.rootNode()) == after_edit
    outcome.layers[1].setPixelData(bytes([1, 2, 3, 255]) * 4, 0, 0, 2, 2)  # the user paints on #2
    iterating.add_round(outcome, request, response(3, [0.4, 0.9]), rounds.MORE)
    doc.waitForDone()
    report.update(after_edit=after_edit, after_more=_names(doc.rootNode()))
    painted = [n for n in outcome.layers if bytes(n.pixelData(0, 0, 1, 1)) == bytes([1, 2, 3, 255])]
    report["paint_kept"] = [n.name() for n in painted]
    report["undo_more_steps"] = _undo_until(app, doc, after_edit)
    api.choose(outcome, 1)  # the outcome follows Undo back to the first round's group
    report["followed"] = [len(outcome.layers), len(outcome.rounds), [n.name() for n in outcome.layers]]
    api.accept(outcome)
    doc.waitForDone()
    report["after_accept"] = _names(doc.rootNode())
    report["undo_accept_steps"] = _undo_until(app, doc, after_edit)
    report["undo_edit_steps"] = _undo_until(app, doc, empty)
    doc.setModified(False)
    return report


def _run_and_exit() -> None:
    try:
        report = _probe()
        report["rounds"] = _probe_rounds()
    except Exception:
        report = {"error": traceback.format_exc()}
    with open(os.environ["BD_UNDO_OUT"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    os._exit(0)  # Krita's own shutdown may crash with a view open; the report is all this run is for


class UndoProbe(Extension):
    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(1000, _run_and_exit))

    def createActions(self, window) -> None:
        pass


if os.environ.get("BD_UNDO_OUT"):
    Krita.instance().addExtension(UndoProbe(Krita.instance()))
