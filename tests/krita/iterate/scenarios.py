"""More, Vary, the prompt history and nothing modal, run INSIDE real Krita (tests/krita/scenario_runner.py;
test_krita_iterate.py asserts).

``rounds``: the scripting API with the real engine (toy models): an edit, More after the selection
changed, Vary from candidate #2, and the refusals. ``docker``: the same through the docker's buttons and
actions with a slow fake engine, every modal call recorded (there must be none). ``history``: what the
prompt field remembers, read in a second Krita session (a restart).
"""

import json
import time
from typing import Any, Callable, Dict, List

from tests.krita.scenario_tools import (
    app,
    digests,
    expect_error,
    photo_doc,
    rgba_of,
    select,
    soft_ellipse,
    stack,
)

PROMPT = "a red hot air balloon"
FAST = dict(steps=8, aug_num=2, guidance_scale=70.0)  # the toy models, a short schedule


def pump(done: Callable[[], bool], timeout: float = 120.0) -> bool:
    from blended_diffusion.qt import QApplication

    deadline = time.time() + timeout
    while not done() and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    return done()


def shown_rgb(doc, source, node, mask: bytes) -> List[List[int]]:
    """The candidate composited over the source (as Krita shows it), RGB of the fully selected pixels."""
    src, cand = rgba_of(doc, source), rgba_of(doc, node)
    out = []
    for i, m in enumerate(mask):
        if m == 255:
            a = cand[4 * i + 3]
            out.append([(cand[4 * i + c] * a + src[4 * i + c] * (255 - a) + 127) // 255 for c in range(3)])
    return out


def mean_abs_diff(a: List[List[int]], b: List[List[int]]) -> float:
    """Mean absolute difference per channel (0..255) over the fully selected pixels."""
    return sum(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q)) / (3.0 * len(a))


def outside_bad(doc, source, node, mask: bytes) -> int:
    """Pixels outside the selection where the candidate is not transparent."""
    cand = rgba_of(doc, node)
    return sum(1 for i, m in enumerate(mask) if m == 0 and cand[4 * i + 3] != 0)


def group_view(outcome) -> Dict[str, Any]:
    children = [c for c in reversed(outcome.group.childNodes())]  # top first
    return {
        "names": [c.name() for c in children],
        "visible": [c.visible() for c in children],
        "same_order": [c.uniqueId() for c in children] == [n.uniqueId() for n in outcome.layers],
        "distances": [c.scores.get("combined") for c in outcome.response.candidates],
        "ranks": [c.rank for c in outcome.response.candidates],
        "seeds": [c.seed for c in outcome.response.candidates],
        "rounds": [c.round for c in outcome.response.candidates],
        "chosen": outcome.chosen,
    }


def scenario_rounds(engine) -> Dict[str, Any]:
    """The API: an edit, More (the selection changed meanwhile), Vary from #2, then the refusals."""
    from blended_diffusion import api

    doc = photo_doc()
    root = doc.rootNode()
    source = root.childNodes()[0]
    w, h = doc.width(), doc.height()
    mask = soft_ellipse(w, h, 300, 150, 70, 55)
    select(doc, mask)
    before = digests(doc)
    doc.refreshProjection()
    image_before = bytes(doc.pixelData(0, 0, w, h))
    outcome = api.run_edit_and_wait(
        doc, PROMPT, layer=source, engine=engine, candidates=2, skip_timesteps=2, seed=11, **FAST
    )
    result: Dict[str, Any] = {"first": group_view(outcome)}
    select(doc, soft_ellipse(w, h, 100, 80, 40, 30))  # the user selects something else: More keeps its own
    api.choose(outcome, 1)
    shown = outcome.response.candidates[1]
    result["more_added"] = api.more(outcome, engine=engine)
    result["more"] = group_view(outcome)
    result["more_shown_kept"] = outcome.response.candidates[outcome.chosen] is shown
    result["stack_after_more"] = stack(root)
    result["outside_bad_more"] = [outside_bad(doc, source, n, mask) for n in outcome.layers]
    # Vary from candidate #2 (index 1), against the fresh candidates of the first two rounds.
    reference = shown_rgb(doc, source, outcome.layers[1], mask)
    fresh = [n for i, n in enumerate(outcome.layers) if i != 1]
    result["fresh_diffs"] = [mean_abs_diff(shown_rgb(doc, source, n, mask), reference) for n in fresh]
    old = list(outcome.response.candidates)
    result["vary_added"] = api.vary(outcome, 1, strength=0.3, engine=engine)
    new = [
        (i, n)
        for i, (n, c) in enumerate(zip(outcome.layers, outcome.response.candidates))
        if not any(c is o for o in old)
    ]
    result["vary_diffs"] = [mean_abs_diff(shown_rgb(doc, source, n, mask), reference) for _, n in new]
    result["vary"] = group_view(outcome)
    result["vary_round_of"] = [outcome.round_of(i) for i, _ in new]
    result["vary_shown_is_new"] = outcome.chosen in [i for i, _ in new]
    result["outside_bad_vary"] = [outside_bad(doc, source, n, mask) for _, n in new]
    result["rounds"] = [[r.kind, r.prompt, r.seed, r.strength, r.steps, r.mode] for r in outcome.rounds]
    now = digests(doc)  # the selection mask changed on purpose; every layer must be as it was
    layers = {u: v for u, v in before.items() if v[0] != "Selection Mask"}
    result["preexisting_identical"] = bool(layers) and all(now.get(u) == v for u, v in layers.items())
    # Krita's own compositing: outside the selection the image is the source, whichever candidate shows.
    doc.refreshProjection()
    shown_px = bytes(doc.pixelData(0, 0, w, h))
    result["projection_outside_bad"] = sum(
        1
        for i, m in enumerate(mask)
        if m == 0 and shown_px[4 * i : 4 * i + 4] != image_before[4 * i : 4 * i + 4]
    )
    result.update(refusals(doc, source, outcome, engine))
    doc.setModified(False)
    doc.close()
    return result


def refusals(doc, source, outcome, engine) -> Dict[str, Any]:
    """Bad moments: each a PluginError with its message, and the document as it was."""
    from blended_diffusion import api

    out: Dict[str, Any] = {}
    root = doc.rootNode()
    outcome.busy = True  # as while a round of this group runs (the docker scenario runs a real one)
    snapshot, layers = digests(doc), stack(root)
    out["busy"] = expect_error(lambda: api.more(outcome, engine=engine))
    outcome.busy = False
    out["busy_unchanged"] = digests(doc) == snapshot and stack(root) == layers
    doc.resizeImage(0, 0, doc.width() + 8, doc.height())
    snapshot, layers = digests(doc), stack(root)
    out["resized"] = expect_error(lambda: api.vary(outcome, engine=engine))
    out["resized_unchanged"] = digests(doc) == snapshot and stack(root) == layers
    doc.resizeImage(0, 0, doc.width() - 8, doc.height())
    kept = api.accept(outcome)
    out["accepted_name"] = kept.name()
    out["after_accept"] = expect_error(lambda: api.more(outcome, engine=engine))
    out["no_group"] = expect_error(lambda: api.more(None, engine=engine))
    second = api.run_edit_and_wait(
        doc, PROMPT, layer=source, engine=engine, candidates=1, skip_timesteps=6, **FAST
    )
    second.group.remove()  # deleted by hand
    snapshot, layers = digests(doc), stack(root)
    out["group_deleted"] = expect_error(lambda: api.more(second, engine=engine))
    out["group_deleted_unchanged"] = digests(doc) == snapshot and stack(root) == layers
    third = api.run_edit_and_wait(
        doc, PROMPT, layer=kept, engine=engine, candidates=1, skip_timesteps=6, **FAST
    )
    kept.remove()  # the group's source layer, deleted by hand
    snapshot, layers = digests(doc), stack(root)
    out["source_deleted"] = expect_error(lambda: api.vary(third, engine=engine))
    out["source_deleted_unchanged"] = digests(doc) == snapshot and stack(root) == layers
    other = app().createDocument(40, 30, "other", "RGBA", "U8", "", 72.0)
    select(other, b"\xff" * 1200)
    fourth = api.run_edit_and_wait(other, PROMPT, engine=engine, candidates=1, skip_timesteps=6, **FAST)
    other.setModified(False)
    other.close()
    out["doc_closed"] = expect_error(lambda: api.more(fourth, engine=engine))
    return out


def scenario_docker(engine) -> Dict[str, Any]:
    """The docker's More / Vary / history and the candidate actions, with a slow fake engine; during a
    job the buttons that would change the group are refused in the docker. Every modal call is recorded."""
    from blended_diffusion import krita_api, params
    from blended_diffusion.ui import docker

    from tests.krita.fake_engine import FakeManager, forbid_modal

    modal = forbid_modal()
    doc = photo_doc()
    krita_api.active_document = lambda: doc
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    ctl.message_log.clear()
    fake = ctl.manager = FakeManager(step_delay=0.2)
    w, h = doc.width(), doc.height()
    mask = soft_ellipse(w, h, 300, 150, 70, 55)
    result: Dict[str, Any] = {}
    dock.prompt.setText("a white cloud")
    dock.candidates.setValue(2)
    dock.steps.setValue(10)
    result["more_without_group"] = dock.more_button.isEnabled()
    ctl.more()  # the More action with no group: a message, nothing else
    result["more_without_group_message"] = ctl.last_message
    select(doc, mask)
    dock.edit_button.click()
    pump(lambda: ctl.worker is None)
    dock.prompt.setText("a yellow kite")
    dock.edit_button.click()
    pump(lambda: ctl.worker is None)
    result["history_items"] = [dock.prompt_box.itemText(i) for i in range(dock.prompt_box.count())]
    result["list_first"] = dock.list.count()
    dock.list.setCurrentRow(1)
    shown = ctl.outcome.response.candidates[1]
    doc.setSelection(None)  # the selection dropped: More and Vary use the group's
    before = stack(doc.rootNode())
    result["more_enabled"] = dock.more_button.isEnabled()
    dock.more_button.click()
    result["busy_buttons"] = [dock.more_button.isEnabled(), dock.vary_button.isEnabled()]
    ctl.more()  # the keyboard action while a job runs
    result["busy_more_message"] = ctl.last_message
    ctl.accept()
    result["busy_accept_message"] = ctl.last_message
    result["busy_unchanged"] = stack(doc.rootNode()) == before
    pump(lambda: ctl.worker is None)
    result["list_after_more"] = [dock.list.item(i).text() for i in range(dock.list.count())]
    result["shown_kept"] = ctl.outcome.response.candidates[ctl.outcome.chosen] is shown
    result["round_line_more"] = dock.review.round_info.text()
    result["more_mask_same"] = fake.client.requests[-1][2] == fake.client.requests[-2][2]
    dock.review.vary_strength.setValue(0.4)
    dock.list.setCurrentRow(1)  # Vary from #2
    dock.vary_button.click()
    pump(lambda: ctl.worker is None)
    sent = fake.client.requests[-1]
    result["vary_init_sent"] = sent[3] is not None
    result["vary_skip"] = [sent[0]["skip_timesteps"], params.strength_to_skip(0.4, 10)]
    result["list_after_vary"] = dock.list.count()
    result["vary_tooltip"] = dock.list.item(ctl.outcome.chosen).toolTip()
    result["round_line_vary"] = dock.review.round_info.text()
    chosen = ctl.outcome.chosen
    ctl.next_candidate()
    result["next"] = [ctl.outcome.chosen, (chosen + 1) % len(ctl.outcome.layers)]
    ctl.previous_candidate()
    ctl.previous_candidate()
    result["previous"] = [ctl.outcome.chosen, (chosen - 1) % len(ctl.outcome.layers)]
    result["visible"] = [n.visible() for n in ctl.outcome.layers]
    # A failing round: the message is in the docker, the group stays for review.
    from bridge.errors import EngineConnectionError

    ctl.manager = FakeManager(EngineConnectionError("connection reset by peer"), crash_log="boom")
    dock.more_button.click()
    pump(lambda: ctl.worker is None)
    result["failed_round"] = [ctl.flow.state, ctl.last_message[:60], dock.list.count()]
    result["status_red"] = "color" in dock.status.styleSheet()
    ctl.manager = fake
    dock.accept_button.click()
    result["after_accept"] = [dock.list.count(), dock.more_button.isEnabled()]
    result["messages"] = list(ctl.message_log)
    result["modal_calls"] = modal
    doc.setModified(False)
    doc.close()
    return result


def scenario_history_write(engine) -> Dict[str, Any]:
    """Prompts remembered by an edit through the API and by the docker's prompt field."""
    from blended_diffusion import api

    from tests.krita.fake_engine import FakeManager

    doc = app().createDocument(40, 30, "h", "RGBA", "U8", "", 72.0)
    select(doc, b"\xff" * 1200)
    api.run_edit_and_wait(doc, "a green hill", engine=FakeManager(), candidates=1, steps=4)
    api.run_edit_and_wait(doc, "a blue lake", engine=FakeManager(), candidates=1, steps=4)
    api.run_edit_and_wait(doc, "a green hill", engine=FakeManager(), candidates=1, steps=4)
    doc.setModified(False)
    doc.close()
    return {"history": api.prompt_history()}


def scenario_history_read(engine) -> Dict[str, Any]:
    """A new Krita session: the docker's drop-down lists the prompts; Clear forgets them (and the file)."""
    from blended_diffusion import api, config
    from blended_diffusion.ui import docker

    dock = docker.BlendedDiffusionDocker()
    items = [dock.prompt_box.itemText(i) for i in range(dock.prompt_box.count())]
    dock.prompt_box.setCurrentIndex(1)
    picked = dock.prompt.text()
    saved_prompt = dock.ctl.settings.get("prompt")
    dock.clear_history.click()
    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        stored = json.load(handle)
    return {
        "items": items,
        "picked": [picked, saved_prompt],
        "after_clear": [dock.prompt_box.count(), api.prompt_history(), stored.get("prompt_history")],
    }
