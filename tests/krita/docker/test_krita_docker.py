"""The docker in real Krita without a window (docker/scenarios.py, in one Krita 5.1 and one Krita 6 process:
tests/krita_session.py), on a fake engine that keeps the GUI checks fast."""

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

SCENARIOS = [Scenario("docker", "tests.krita.docker.scenarios:scenario_docker")]  # its own fake engine


@pytest.fixture(scope="module")
def session(tmp_path_factory, krita):
    home = tmp_path_factory.mktemp(f"krita-docker-{krita.label}")
    return run_session(krita, scenario_environment(home, "tiny"), home, SCENARIOS)


def names(stack):
    return [entry[0] for entry in stack]


def test_docker_settings_edit_and_review(session):
    r = session["docker"]
    assert r["saved_candidates"] == 3 and r["saved_prompt"] == "a red hot air balloon", "settings persist"
    assert "skip_timesteps" in r["strength_tooltip"]
    assert r["prompt_enabled_in_removal"] is False and r["removal_prompt_sent"] == ""
    assert r["engine_section_shown"] and r["host_enabled_remote"] and not r["device_enabled_remote"]
    assert r["started_without_selection"] is False
    assert "Edit the whole layer instead?" in r["no_selection_messages"][0]
    shown, status = r["question_in_docker"]
    assert shown and "Edit the whole layer instead?" in status, "the question is asked in the docker"
    assert r["question_after_no"] is False
    assert r["modal_calls"] == [], "no modal dialog"
    assert r["unchanged_without_selection"]
    assert r["started"] and r["cancel_enabled_while_busy"]
    assert r["state"] == "review" and "ready (fake)" in r["status"]
    # combined distances 0.6, 0.7, 0.8 as match figures (cosine similarity), higher for the better rank
    assert r["list"] == ["#1 match 46%", "#2 match 38%", "#3 match 30%"]
    assert "inside the selection: match 50% (CLIP distance 0.550)" in r["tooltips"][0]
    assert "with its surroundings: match 42% (CLIP distance 0.650)" in r["tooltips"][0]
    assert all(r["thumbnails"]) and r["progress"] == [3, 3]
    assert r["visible_after_click"] == [False, False, True]
    assert names(r["stack_after_accept"]) == ["Selection Mask", "a red hot air balloon", "Background"]
    assert r["list_after_accept"] == 0 and r["state_after_accept"] == "ready"
    assert len(r["messages"]) == 1, "no error message during the edit"


def test_docker_size_never_changes(session):
    """Settings, an expanded section, a live preview, a long message, the candidate list and Accept leave
    the dock's size hints as they were: the plugin never resizes Krita's canvas (a canvas resized as the
    status bar's progress bar appears deadlocks Krita 5.1; docs/troubleshooting.md)."""
    sizes = session["docker"]["sizes"]
    assert len(sizes) == 5
    assert all(s == sizes[0] for s in sizes), sizes
