"""A stand-in engine for Krita-side checks that must not depend on torch (error paths, crash messages).

It has the EngineManager / EngineClient surface the plugin uses; its candidates are the source with
inverted colours, alpha = the mask sent, so results are predictable."""

import threading
import time
from typing import Any, Dict, Optional

from blended_diffusion import errors, pixels


class FakeClient:
    def __init__(
        self,
        fail_with: Optional[BaseException] = None,
        status: Optional[dict] = None,
        step_delay: float = 0.0,
    ) -> None:
        self.fail_with = fail_with
        self.step_delay = step_delay  # seconds per step: a job slow enough to act on while it runs
        self.requests: list = []
        self.reply_status = status or {"device": "fake"}

    def status(self) -> Dict[str, Any]:
        return dict(self.reply_status)

    def edit(
        self,
        params,
        image_png,
        mask_png,
        init_png=None,
        on_progress=None,
        cancel: Optional[threading.Event] = None,
    ):
        self.requests.append((dict(params), image_png, mask_png, init_png))
        if self.fail_with is not None:
            raise self.fail_with
        w, h, rgba = pixels.decode_png(image_png)
        _, _, mask_rgba = pixels.decode_png(mask_png)
        mask = mask_rgba[0::4]
        total = 3
        for step in range(1, total + 1):
            if cancel is not None and cancel.is_set():
                from bridge.errors import JobCancelled

                raise JobCancelled()
            if on_progress is not None:
                on_progress({"step": step, "total": total}, None)
            if self.step_delay:
                time.sleep(self.step_delay)
        count = int(params["batch_size"]) * int(params["iterations_num"])
        candidates = []
        for rank in range(1, count + 1):
            out = bytearray(rgba)
            out[0::4] = bytes((255 - v + 40 * rank) & 0xFF for v in rgba[0::4])
            out[3::4] = mask
            candidates.append(
                {
                    "rank": rank,
                    "seed": params["seed"] + rank,
                    "scores": {
                        "masked_clip": 0.45 + rank / 10,
                        "full_clip": 0.55 + rank / 10,
                        "combined": 0.5 + rank / 10,
                    },
                    "box": [0, 0, w, h],
                    "png": pixels.encode_png(w, h, bytes(out), 4),
                }
            )
        return {"candidates": candidates, "box": [0, 0, w, h], "notes": ["fake engine"]}

    def extend(self, params, image_png, on_progress=None, cancel: Optional[threading.Event] = None):
        """A grown canvas per candidate: a flat colour on the new area, transparent over the image."""
        self.requests.append((dict(params), image_png, None, None))
        if self.fail_with is not None:
            raise self.fail_with
        w, h, _rgba = pixels.decode_png(image_png)
        left, right, top, bottom = (int(params.get(k, 0)) for k in ("left", "right", "top", "bottom"))
        cw, ch = w + left + right, h + top + bottom
        if on_progress is not None:
            on_progress({"step": 1, "total": 1}, None)
        count = int(params["batch_size"]) * int(params["iterations_num"])
        candidates = []
        for rank in range(1, count + 1):
            out = bytearray()
            for y in range(ch):
                for x in range(cw):
                    inside = left <= x < left + w and top <= y < top + h
                    out += b"\0\0\0\0" if inside else bytes([40 * rank & 0xFF, 120, 200, 255])
            candidates.append(
                {
                    "rank": rank,
                    "seed": params["seed"] + rank,
                    "scores": {"combined": 0.5 + rank / 10},
                    "box": [0, 0, cw, ch],
                    "png": pixels.encode_png(cw, ch, bytes(out), 4),
                }
            )
        return {"candidates": candidates, "canvas_size": [cw, ch], "offset": [left, top], "notes": []}

    def close(self) -> None:
        pass


class FakeManager:
    """EngineManager look-alike; ``crash_log`` makes every job fail like a dead engine."""

    def __init__(
        self,
        fail_with: Optional[BaseException] = None,
        crash_log: str = "",
        status: Optional[dict] = None,
        step_delay: float = 0.0,
    ) -> None:
        self.client = FakeClient(fail_with, status, step_delay)
        self.crash_log = crash_log
        self.running = not crash_log
        self.device = "fake"
        self.status = self.client.status()  # what EngineManager.connect records

    def connect(self) -> FakeClient:
        return self.client

    def log_tail(self, lines: int = 20) -> str:
        return self.crash_log

    def stop(self) -> None:
        pass

    def configure(self, settings) -> None:
        self.settings = settings


def dock_size(dock: Any) -> list:
    """The dock's size hint and minimum size hint, after pending layout events."""
    from blended_diffusion.qt import QApplication

    QApplication.processEvents()
    hint, minimum = dock.sizeHint(), dock.minimumSizeHint()
    return [hint.width(), hint.height(), minimum.width(), minimum.height()]


__all__ = ["FakeClient", "FakeManager", "dock_size", "errors"]


def forbid_modal(calls: Optional[list] = None) -> list:
    """Record every modal call instead of blocking: the static QMessageBox functions, QInputDialog's
    getters and any dialog's exec_()/exec(). The plugin must make none (the returned list stays empty);
    each returns at once as if dismissed, so a regression fails the test instead of hanging Krita."""
    from blended_diffusion.qt import QDialog, QInputDialog, QMessageBox

    calls = [] if calls is None else calls

    def record(name: str, result: Any) -> Any:
        def modal(*args: Any, **kwargs: Any) -> Any:
            text = next((a for a in args if isinstance(a, str) and a), "")
            calls.append(f"{name}: {text}")
            return result

        return modal

    for name in ("warning", "question", "information", "critical", "about"):
        setattr(QMessageBox, name, staticmethod(record(f"QMessageBox.{name}", QMessageBox.StandardButton.No)))
    for name in ("getText", "getItem", "getInt", "getDouble", "getMultiLineText"):
        setattr(QInputDialog, name, staticmethod(record(f"QInputDialog.{name}", ("", False))))
    for cls in (QDialog, QMessageBox, QInputDialog):
        cls.exec_ = record(f"{cls.__name__}.exec_", 0)
        cls.exec = record(f"{cls.__name__}.exec", 0)
    return calls
