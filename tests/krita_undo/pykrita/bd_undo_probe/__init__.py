"""Test-only Krita plugin: in the real GUI (undo needs a window and a view), grow a canvas the way the
extension does, then trigger Krita's own Undo until the canvas is back; write what happened to
$BD_UNDO_OUT and exit. tests/krita/test_krita_undo.py runs it under xvfb-run."""

import json
import os
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication


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


def _run_and_exit() -> None:
    try:
        report = _probe()
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
