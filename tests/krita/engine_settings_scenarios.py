"""Run INSIDE real Krita by kritarunner: the scripting API without ``engine=`` uses the engine the docker's
saved settings name (issue 30). test_krita_engine_settings.py writes the settings (a remote engine on
loopback) and points the local engine's record at nothing, so only the remote one can answer::

    kritarunner -s engine_settings_scenarios <result.json> fake saved_remote
"""

from typing import Any, Dict

from krita_scenarios import PROMPT, TINY, digests, photo_doc, run_with_engine, select, soft_ellipse


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


SCENARIOS = {"saved_remote": scenario_saved_remote}


def __main__(args):
    result_path, engine_kind, *names = list(args)
    run_with_engine(result_path, engine_kind, names, SCENARIOS)
