"""Extend Canvas with Text in real Krita (extend/scenarios.py, in one Krita 5.1 and one Krita 6 process:
tests/krita_session.py): through the API on the real engine (tiny models), and through the docker's Extend
section on a fake engine."""

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

HERE = "tests.krita.extend.scenarios"
SCENARIOS = [
    Scenario("extend", f"{HERE}:scenario_extend", "real"),
    Scenario("docker_extend", f"{HERE}:scenario_docker_extend"),  # its own fake engine
]


@pytest.fixture(scope="module")
def extends(tmp_path_factory, krita):
    home = tmp_path_factory.mktemp(f"krita-extend-{krita.label}")
    env = scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log"))
    return run_session(krita, env, home, SCENARIOS)


def names(stack):
    return [entry[0] for entry in stack]


def test_extend_grows_the_canvas_and_adds_candidates_on_top(extends):
    r = extends["extend"]
    w, h = r["size_before"]
    assert r["size_after"] == [w + 16 + 13, h]
    assert names(r["stack_before"]) == ["Notes", "Background"]
    assert names(r["stack_after"]) == ["BD: left: hell | right: heaven", "Notes", "Background"]
    children = r["stack_after"][0][3]
    assert len(children) == 2 and [c[2] for c in children] == [True, False]
    assert r["progress_last"][0] == r["progress_last"][1] > 0


def test_extend_keeps_original_pixels_byte_for_byte(extends):
    r = extends["extend"]
    assert r["preexisting_at_offset"], "pre-existing layers keep their pixels at the new offset"
    assert r["preexisting_new_area_alpha"] == [[0, 0], [0, 0]], "nothing appears in their new area"
    for cand in r["candidates"]:
        assert cand["alpha_over_original"] == [0, 0], cand  # the candidate never covers the old image
        assert cand["alpha_left"] == [255, 255] and cand["alpha_right"] == [255, 255], cand
        assert cand["projection_original_identical"], cand
    assert r["candidates"][0]["new_area_sha"] != r["candidates"][1]["new_area_sha"]


def test_extend_accept_and_discard(extends):
    r = extends["extend"]
    assert names(r["stack_after_accept"]) == ["left: hell | right: heaven", "Notes", "Background"]
    assert r["size_after_accept"] == r["size_after"] and r["accepted_matches_candidate"]
    assert r["size_during_second"] == [r["size_after"][0], r["size_after"][1] + 9]
    assert r["second_group"] == "BD: grass"
    assert r["discard_size"] == r["size_after"], "Discard returns the canvas to its old size"
    assert r["discard_restores_stack"] and r["discard_restores_pixels"]
    assert r["choose_after_discard"] == "StaleResultError"


def test_extend_refusals_change_nothing(extends):
    r = extends["extend"]
    assert "at least one side" in r["refusals"]["no side"]
    assert "left size must be between 0" in r["refusals"]["negative"]
    assert "prompt for the top side" in r["refusals"]["prompt without side"]
    assert r["refusals_changed_nothing"]


def test_docker_extend_section_grows_and_discard_restores(extends):
    r = extends["docker_extend"]
    assert r["saved"] == [24, 10, "a castle"] and r["section_shown"] and r["started"]
    assert r["sent"] == {
        "left": 24,
        "right": 0,
        "top": 0,
        "bottom": 10,
        "side_prompts": {"left": "a castle"},
        "prompt": "a meadow",
    }
    w, h = r["size_before"]
    assert r["size_review"] == [w + 24, h + 10] and r["state"] == "review"
    assert len(r["list"]) == 2 and all(r["thumbnails"])
    assert r["size_after_discard"] == [w, h] and r["list_after_discard"] == 0
    assert r["messages"] == []
