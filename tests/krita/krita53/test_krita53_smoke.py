"""Krita 5.3 (Qt5, Debian sid, in a root: tests/krita_roots.py): the smoke test of issue 30, an edit through
the real engine and the docker, the scenarios tests/krita/edit/ and docker/ run on Krita 5.1 and 6
(the installed plugin's load: tests/installer/test_krita_loads.py)."""

import pytest

from tests.krita_env import ensure_krita, scenario_environment
from tests.krita_session import Scenario, run_session

SCENARIOS = [
    Scenario("edit", "tests.krita.edit.scenarios:scenario_edit", "real"),
    Scenario("docker", "tests.krita.docker.scenarios:scenario_docker"),
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """test_krita_edit.py's and test_krita_docker.py's first scenarios, in one Krita 5.3 process."""
    krita = ensure_krita("krita5.3")
    home = tmp_path_factory.mktemp("krita53")
    env = scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log"))
    return run_session(krita, env, home, SCENARIOS)


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
