"""Run INSIDE real Krita (tests/krita/scenario_runner.py): the docker's Model choice (issue 31) and a Blended
Latent Diffusion edit through the real engine. test_krita_model_choice.py asserts on what they return."""

import json
from typing import Any, Dict

from tests.krita.scenario_tools import (
    PROMPT,
    candidate_checks,
    digests,
    photo_doc,
    select,
    soft_ellipse,
)

STATUS = {
    "device": "cpu",
    "models": {"preset": "toy", "edit_defaults": {}},
    "presets": [
        {
            "name": "default",
            "method": "paper",
            "method_name": "Blended Diffusion (paper)",
            "installed": False,
        },
        {
            "name": "toy",
            "method": "paper",
            "method_name": "Blended Diffusion (paper)",
            "installed": True,
            "estimate": 14.2,
            "description": "toy ADM",
        },
        {
            "name": "toy-latent",
            "method": "latent",
            "method_name": "Blended Latent Diffusion",
            "installed": True,
            "estimate": None,
            "description": "toy latent",
        },
    ],
}


def scenario_docker_models(_engine) -> Dict[str, Any]:
    from blended_diffusion import config, krita_api
    from blended_diffusion.qt import Qt
    from blended_diffusion.ui import docker

    from tests.krita.fake_engine import FakeManager, forbid_modal

    modal = forbid_modal()
    doc = photo_doc()
    krita_api.active_document = lambda: doc
    dock = docker.BlendedDiffusionDocker()
    ctl = dock.ctl
    ctl.manager = FakeManager(status=STATUS)
    dock.refresh()
    box = dock.model
    result: Dict[str, Any] = {
        "items": [[box.itemText(i), box.itemData(i)] for i in range(box.count())],
        "tooltips": [box.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(box.count())],
        "shown": box.currentData(),
        "enabled": box.isEnabled(),
    }
    box.setCurrentIndex(box.findData("toy-latent"))
    with open(config.plugin_settings_path(), encoding="utf-8") as handle:
        result["saved_models"] = json.load(handle).get("models")
    result["engine_models"] = ctl.manager.settings.models
    dock.refresh()
    result["shown_after_choice"] = box.currentData()
    dock.engine_mode.setCurrentText("remote")
    dock.refresh()
    result["enabled_remote"] = box.isEnabled()
    dock.engine_mode.setCurrentText("local")
    result["modal_calls"] = modal
    dock.deleteLater()
    return result


def scenario_latent_edit(engine) -> Dict[str, Any]:
    """Photo + soft ellipse (a feathered selection) + an edit on the toy-latent preset (the engine started
    with it): the selection's values are the diffusion's per-pixel strength (issue 37)."""
    from blended_diffusion import api

    doc = photo_doc()
    source = doc.rootNode().childNodes()[0]
    mask = soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55)
    select(doc, mask)
    before = digests(doc)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, candidates=2, seed=3)
    result = candidate_checks(doc, outcome, source, mask)
    after = digests(doc)
    result["preexisting_identical"] = all(after.get(k) == v for k, v in before.items())
    result["preset"] = (engine.status.get("models") or {}).get("preset")
    result["method"] = (engine.status.get("models") or {}).get("method")
    result["names"] = [node.name() for node in outcome.layers]
    result["notes"] = list(outcome.notes)
    api.discard(outcome)
    return result


def scenario_latent_rounds(engine) -> Dict[str, Any]:
    """More and Vary on a latent edit, then Extend Canvas with Text on the latent preset."""
    from blended_diffusion import api

    doc = photo_doc()
    source = doc.rootNode().childNodes()[0]
    w, h = doc.width(), doc.height()
    mask = soft_ellipse(w, h, 300, 150, 70, 55)
    select(doc, mask)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, engine=engine, candidates=2, seed=3)
    result: Dict[str, Any] = {"more_added": api.more(outcome, engine=engine)}
    result["vary_added"] = api.vary(outcome, 0, strength=0.5, engine=engine)
    checks = candidate_checks(doc, outcome, source, mask)
    result["round_candidates"] = len(checks["candidates"])
    result["round_outside_bad"] = [c["outside_bad"] for c in checks["candidates"]]
    api.discard(outcome)
    before = bytes(source.pixelData(0, 0, w, h))
    extended = api.run_extend_and_wait(doc, "a landscape", right=12, engine=engine, candidates=1, seed=5)
    result["extend_size"] = [doc.width(), doc.height()]
    result["extend_layers"] = len(extended.layers)
    result["extend_source_kept"] = bytes(source.pixelData(0, 0, w, h)) == before
    api.discard(extended)
    result["size_after_discard"] = [doc.width(), doc.height()]
    return result
