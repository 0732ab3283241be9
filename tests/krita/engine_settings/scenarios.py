"""Run INSIDE real Krita (tests/krita/scenario_runner.py): the scripting API without ``engine=`` uses the
engine the docker's saved settings name (issue 30). test_krita_engine_settings.py writes the settings (a
remote engine on loopback) and points the local engine's record at nothing, so only the remote one can
answer."""

from typing import Any, Dict

from tests.krita.scenario_tools import PROMPT, TINY, digests, photo_doc, select, soft_ellipse


def scenario_saved_remote(_engine) -> Dict[str, Any]:
    from blended_diffusion import api

    doc = photo_doc()
    source = doc.rootNode().childNodes()[0]
    select(doc, soft_ellipse(doc.width(), doc.height(), 300, 150, 70, 55))
    before = digests(doc)
    outcome = api.run_edit_and_wait(doc, PROMPT, layer=source, **TINY)
    settings = api.default_engine().settings
    return {
        "mode": settings.mode,
        "host": settings.host,
        "port": settings.port,
        "candidates": len(outcome.layers),
        "source_unchanged": digests(doc)[source.uniqueId().toString()]
        == before[source.uniqueId().toString()],
    }
