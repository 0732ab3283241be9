"""The full-resolution detail stage through the installed plugin's API, INSIDE real Krita (by
tests/krita/scenario_runner.py; test_krita_detail.py asserts), on the toy engine.

A 1024x768 document, a 600 px soft selection: one edit with detail off and one with detail on (the layers'
RGBA written beside the result for test_krita_detail.py to measure), then an edit cancelled during the
detail stage, then a short edit that shows the engine still works.
"""

import os
import threading
from typing import Any, Dict, List

from tests.krita.scenario_tools import (
    app,
    candidate_checks,
    digests,
    expect_error,
    home,
    rgba_of,
    select,
    soft_ellipse,
    stack,
)

W, H = 1024, 768
PROMPT = "a red circle"
# 2 candidates, 4 model-size steps each; the detail stage then runs round(0.15 x 12) = 2 steps of its tiles
QUICK = dict(candidates=2, steps=12, skip_timesteps=8, aug_num=2, guidance_scale=70.0, seed=3)
FIRST_PASS = 2 * 4  # progress units of the model-size pass


def gradient_layer(doc) -> Any:
    """The document's layer painted with a smooth gradient (BGRA), the 'photograph' being edited."""
    source = doc.rootNode().childNodes()[0]
    rows = []
    for y in range(H):
        row = bytearray(W * 4)
        for x in range(W):
            row[4 * x : 4 * x + 4] = bytes((150 - 50 * y // H, 130, 120 + 60 * x // W, 255))
        rows.append(bytes(row))
    source.setPixelData(b"".join(rows), 0, 0, W, H)
    return source


def docker_follows_the_selection(doc) -> Dict[str, Any]:
    """The docker's detail estimate for the selection, then for a smaller one after the poll the docker's
    timer runs (Krita sends no signal when the selection changes)."""
    from blended_diffusion import krita_api
    from blended_diffusion.ui import docker

    krita_api.active_document = lambda: doc
    dock = docker.BlendedDiffusionDocker()
    dock.show()
    # what a status reply of a measured engine says (the toy model's 32 px, seconds per step and tile-step)
    dock.ctl.estimates.update(
        {"step_times": {"guided": 0.2, "unguided": 0.05, "detail": 0.05}, "models": {"image_size": 32}},
        device="cpu",
    )
    dock.prompt.setText(PROMPT)
    dock.detail.setCurrentText("on")
    seen = {"timer": [dock._selection_poll.isActive(), dock._selection_poll.interval()]}
    seen["large"] = dock.time_estimate.text()
    select(doc, soft_ellipse(W, H, 200, 200, 80, 80))
    seen["unpolled"] = dock.time_estimate.text()
    dock._poll_selection()  # what the timer calls every SELECTION_POLL_MS
    seen["small"] = dock.time_estimate.text()
    dock.detail.setCurrentText("off")
    seen["off"] = dock.time_estimate.text()
    dock.close()
    return seen


def scenario_detail(engine) -> Dict[str, Any]:
    from blended_diffusion import api, krita_api

    folder = home()
    result: Dict[str, Any] = {}
    doc = app().createDocument(W, H, "detail", "RGBA", "U8", "", 72.0)
    source = gradient_layer(doc)
    mask = soft_ellipse(W, H, 500, 384, 300, 300)
    select(doc, mask)
    result["extent"] = krita_api.selection_extent(doc)  # what the docker's estimate counts tiles from
    with open(os.path.join(folder, "source.rgba"), "wb") as handle:
        handle.write(rgba_of(doc, source))
    with open(os.path.join(folder, "mask.raw"), "wb") as handle:
        handle.write(mask)
    for detail in ("off", "on"):
        progress: List[List[int]] = []
        outcome = api.run_edit_and_wait(
            doc, PROMPT, layer=source, engine=engine, detail=detail,
            on_progress=lambda s, t, p, seen=progress: seen.append([s, t]), **QUICK,
        )  # fmt: skip
        # the pixel-by-pixel checks (slow in Krita's Python) where the stage runs; off is edit()'s own
        checks = candidate_checks(doc, outcome, source, mask) if detail == "on" else {}
        checks["boxes"] = [list(c.box) for c in outcome.response.candidates]
        checks["bounds"] = [[n.bounds().width(), n.bounds().height()] for n in outcome.layers]
        checks["notes"] = list(getattr(outcome.response, "notes", []) or [])
        checks["progress"] = progress
        for index, node in enumerate(outcome.layers):
            with open(os.path.join(folder, f"{detail}{index}.rgba"), "wb") as handle:
                handle.write(rgba_of(doc, node))
        api.discard(outcome)
        result[detail] = checks

    # Cancel during the detail stage, as the docker's Cancel button does: nothing is added.
    before, stack_before = digests(doc), stack(doc.rootNode())
    cancel = threading.Event()
    steps: List[int] = []

    def on_progress(step: int, total: int, preview: Any) -> None:
        steps.append(step)
        if step > FIRST_PASS:
            cancel.set()

    result["cancelled"] = expect_error(
        lambda: api.run_edit_and_wait(
            doc, PROMPT, layer=source, engine=engine, detail="on", cancel=cancel, on_progress=on_progress,
            **QUICK,
        )
    )  # fmt: skip
    result["cancel_steps"] = steps
    result["cancel_unchanged"] = digests(doc) == before and stack(doc.rootNode()) == stack_before
    after = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, **dict(QUICK, candidates=1))
    result["after_cancel_candidates"] = len(after.layers)
    result["docker"] = docker_follows_the_selection(doc)
    doc.close()
    return result
