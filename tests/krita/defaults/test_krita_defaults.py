"""The docker's defaults follow the engine preset's recommended settings, in real Krita with the real
engine: the toy preset (50 steps, skip 10, guidance 70, 4 candidates) in a first session, a user's value
kept across a restart, Reset, and another preset (tiny, which recommends nothing) after the engine changed.
defaults/scenarios.py runs in one Krita per session (tests/krita_session.py), all on one throw-away HOME."""

import re
import sys

import pytest

from tests.krita_env import HOST_KRITA, KRITARUNNER, scenario_environment, write_engine_config
from tests.krita_session import Scenario, run_session

TOY = {"candidates": 4, "strength": 0.8, "steps": 50, "guidance": 70.0, "aug_num": 8}
REFERENCE = {"candidates": 4, "strength": 0.75, "steps": 100, "guidance": 1000.0, "aug_num": 8}
HERE = "tests.krita.defaults.scenarios"

pytestmark = pytest.mark.skipif(
    KRITARUNNER is None, reason="kritarunner is not installed (apt-get install krita python3-pyqt5)"
)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Three Krita sessions on one HOME (each a restart of the one before), the engine's preset changed
    between them as install.py --models would."""
    home = tmp_path_factory.mktemp("krita-defaults-home")
    env = scenario_environment(home, "toy")
    config = home / "engine.json"
    results = None
    for name, models in (("first", None), ("restart", "tiny"), ("check_missing", "default")):
        if models:  # "default": the paper's models, whose weights this test HOME does not have
            write_engine_config(config, models)
        found = run_session(HOST_KRITA, env, home, [Scenario(name, f"{HERE}:scenario_{name}")], tag=name)
        results = found if results is None else results.merged(found)
    return results


def test_first_session_takes_the_toy_presets_values(sessions):
    first = sessions["first"]
    assert first["before"] == REFERENCE, "a fresh docker shows the reference's values"
    assert "read when it first starts" in first["note_before"]
    assert first["started"] and first["state"] == "review", first["messages"]
    # The first edit already used the preset's values, although the docker did not know them yet.
    assert first["sent"] == {
        "timestep_respacing": "50",
        "skip_timesteps": 10,
        "clip_guidance_lambda": 70.0,
        "aug_num": 8,
        "batch_size": 4,
        "iterations_num": 1,
    }
    assert first["after"] == TOY
    assert first["status_on_gui_thread"] == [True], "the engine's reply is handled on the GUI thread"
    assert first["note_after"] == (
        "Defaults from preset 'toy': 4 candidates, strength 0.80, 50 steps, guidance 70, 8 augmentations."
    )
    assert first["note_user"].endswith("Yours: steps.")
    assert first["saved"]["steps"] == 30 and first["saved"]["user_changed"] == ["steps"]


def test_candidates_show_the_match_figure(sessions):
    first = sessions["first"]
    assert len(first["layer_names"]) == 4 and first["list"] == first["layer_names"]
    matches = []
    for rank, (name, tip) in enumerate(zip(first["layer_names"], first["tooltips"]), start=1):
        found = re.fullmatch(rf"#{rank} match (\d{{1,3}})%", name)
        assert found, name
        matches.append(int(found.group(1)))
        assert "inside the selection: match" in tip and "with its surroundings: match" in tip
    assert matches == sorted(matches, reverse=True), "the best-ranked candidate has the highest match"


def test_user_value_survives_a_restart_and_reset_restores_the_preset(sessions):
    restart = sessions["restart"]
    assert restart["restored"] == dict(TOY, steps=30)
    assert "preset 'toy'" in restart["note_restored"] and "Yours: steps." in restart["note_restored"]
    assert restart["after_reset"] == TOY
    assert restart["saved_after_reset"]["steps"] == 50 and restart["saved_after_reset"]["user_changed"] == []


def test_another_preset_updates_the_defaults_and_keeps_the_users(sessions):
    restart = sessions["restart"]
    # two replies, both on the GUI thread: the status read, then "Check engine"
    assert restart["read_started"] and restart["status_on_gui_thread"] == [True, True]
    assert restart["after_status"] == dict(REFERENCE, guidance=700.0), restart["messages"]
    assert "preset 'tiny' recommends nothing" in restart["note_after_status"]
    assert restart["note_after_status"].endswith("Yours: guidance.")
    assert restart["saved_after_status"]["engine_presets"]["local"]["preset"] == "tiny"


def test_check_engine_reports_the_running_engine(sessions):
    restart = sessions["restart"]
    # reachable with the Engine section collapsed, and disabled while the check runs
    assert restart["check_enabled"] and restart["check_busy"]
    report = restart["report"]
    assert "Engine: local (started by the plugin; its log: " in report
    assert "Preset: tiny [ready]" in report and "Device: cpu" in report
    assert "Packages: torch " in report and "Estimated time of a default edit" in report
    assert f"Python {sys.version.split()[0]}" in report  # the engine's Python: this test's interpreter
    assert restart["messages"] == [], restart["messages"]


def test_check_engine_explains_an_engine_that_cannot_start(sessions):
    missing = sessions["check_missing"]
    assert missing["started"] is True
    report = missing["report"]
    assert "The engine could not be reached:" in report
    assert "Preset: default [NOT READY]" in report  # from python -m engine doctor, run by the plugin
    assert "256x256_diffusion_uncond.pt: MISSING" in report and "download from https://" in report
    assert missing["messages"] == [], "the report replaces the error box"
