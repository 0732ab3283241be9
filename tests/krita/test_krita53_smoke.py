"""Krita 5.3 (Qt5, Debian sid, in a root: tests/krita_roots.py): the smoke test of issue 30, an edit through
the real engine and the docker, the same scenarios test_krita_plugin.py runs on Krita 5.1 and 6 (the
installed plugin's load is tests/installer/test_krita_loads.py::test_krita_5_3_loads_the_installed_plugin)."""

import pytest

from tests.krita_env import ensure_krita, run_scenarios, scenario_environment


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    krita = ensure_krita("krita5.3")
    home = tmp_path_factory.mktemp("krita53")
    env = scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log"))
    found = {}
    for engine, scenario in (("real", "edit"), ("fake", "docker")):
        out = home / f"result-{scenario}.json"
        found.update(run_scenarios(env, home, "krita_scenarios", out, engine, scenario, krita=krita))
        assert "error" not in found[scenario], found[scenario].get("traceback", found[scenario].get("error"))
    return found


def test_edit_on_krita_5_3_adds_candidates_and_keeps_the_rest(smoke):
    r = smoke["edit"]
    group = [entry for entry in r["stack_after_edit"] if entry[1] == "grouplayer"]
    assert len(group) == 1 and group[0][0] == "BD: a red hot air balloon"
    assert [child[2] for child in group[0][3]] == [True, False], "two candidates, the best one shown"
    assert r["preexisting_identical"], "the user's layers are untouched"
    assert len(r["candidates"]) == 2
    for cand in r["candidates"]:
        assert cand["outside_bad"] == 0 and cand["inside_changed"] > 0, cand
    assert r["projection_outside_bad"] == 0


def test_docker_on_krita_5_3_edits_reviews_and_accepts(smoke):
    d = smoke["docker"]
    assert d["state"] == "review" and d["list"] == ["#1 match 46%", "#2 match 38%", "#3 match 30%"]
    assert all(d["thumbnails"]) and d["modal_calls"] == []
    assert [entry[0] for entry in d["stack_after_accept"]] == [
        "Selection Mask",
        "a red hot air balloon",
        "Background",
    ]
