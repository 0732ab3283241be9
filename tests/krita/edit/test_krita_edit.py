"""An edit in real Krita through the scripting API (edit/scenarios.py, run in one Krita 5.1 and one Krita 6
process: tests/krita_session.py, offscreen, with a throw-away HOME so the user's Krita configuration is
untouched); the assertions here read what each scenario returned.

The edits go through the real bridge to a real engine (`python -m engine serve --models tiny`, started by
the plugin's own EngineManager with this venv's Python, once for the session); the refusals use a fake
engine where a crash or cancellation must be staged (and the real one once, to show the missing-weights
message)."""

import re

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

HERE = "tests.krita.edit.scenarios"
SCENARIOS = [
    Scenario("edit", f"{HERE}:scenario_edit", "real"),
    Scenario("scribble", f"{HERE}:scenario_scribble", "real"),
    Scenario("depth16", f"{HERE}:scenario_depth16", "real"),
    Scenario("depthf16", f"{HERE}:scenario_depthf16", "real"),
    Scenario("restart", f"{HERE}:scenario_restart", "real"),  # it kills the engine: the last real one
    Scenario("refusals", f"{HERE}:scenario_refusals", "fake"),
]


@pytest.fixture(scope="module")
def edits(tmp_path_factory, krita):
    """Krita 5.1 and Krita 6 (tests/conftest.py), each its own home and one Krita process."""
    home = tmp_path_factory.mktemp(f"krita-edit-{krita.label}")
    env = scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log"))
    return run_session(krita, env, home, SCENARIOS)


def names(stack):
    return [entry[0] for entry in stack]


def test_edit_adds_group_with_candidates_above_source(edits):
    r = edits["edit"]
    assert names(r["stack_before"]) == ["Selection Mask", "Notes", "Background"]
    assert names(r["stack_after_edit"]) == [
        "Selection Mask",
        "Notes",
        "BD: a red hot air balloon",
        "Background",
    ]
    group = r["stack_after_edit"][2]
    assert group[1] == "grouplayer"
    children = group[3]
    assert len(children) == 2
    assert [c[1] for c in children] == ["paintlayer", "paintlayer"]
    assert [c[0].split(" ")[0] for c in children] == ["#1", "#2"]
    assert all(re.fullmatch(r"#\d+ match \d{1,3}%", c[0]) for c in children), children
    assert [c[2] for c in children] == [True, False], "only the best candidate is visible"
    assert r["sent_mask_soft"], "the soft selection values reach the engine"
    assert r["progress"] and r["progress"][-1][0] == r["progress"][-1][1] > 0


def test_edit_never_touches_preexisting_layers(edits):
    for name in ("edit", "scribble", "depth16", "depthf16"):
        assert edits[name]["preexisting_identical"], name
    assert edits["edit"]["preexisting_identical_after_accept"]


def test_candidates_equal_source_outside_selection(edits):
    for name in ("edit", "scribble", "depth16"):
        r = edits[name]
        assert len(r["candidates"]) == 2
        for cand in r["candidates"]:
            assert cand["outside_bad"] == 0, (name, cand)
            assert cand["inside_changed"] > 0, (name, cand)  # the engine did edit inside the selection
        assert r["projection_outside_bad"] == 0, name


def test_choose_accept_and_discard(edits):
    r = edits["edit"]
    assert r["visible_after_choose"] == [False, True]
    assert names(r["stack_after_accept"]) == [
        "Selection Mask",
        "Notes",
        "a red hot air balloon",
        "Background",
    ]
    assert r["stack_after_accept"][2][1] == "paintlayer"
    assert r["accepted_matches_candidate"]
    assert r["removal_group_name"] == "BD: Removal"
    assert r["discard_restores_stack"] and r["discard_restores_pixels"]
    assert r["choose_after_discard"] == "StaleResultError"


def test_scribble_mode_sends_strokes_from_layer_above(edits):
    r = edits["scribble"]
    assert r["init_sent"]
    assert r["init_pixel_at_stroke"] == [255, 0, 0, 255], "the red stroke is in the init image"
    assert r["image_pixel_at_stroke"] != [255, 0, 0, 255], "the source image is sent without it"
    assert names(r["stack_after_edit"]) == [
        "Selection Mask",
        "BD: a red hot air balloon",
        "Strokes",
        "Background",
    ]


@pytest.mark.parametrize("scenario,depth", [("depth16", "U16"), ("depthf16", "F16")])
def test_16bit_documents(edits, scenario, depth):
    r = edits[scenario]
    assert r["doc_depth"] == depth
    assert [c["depth"] for c in r["candidates"]] == [depth, depth]
    assert all(c["bytes"] == 96 * 64 * 8 for c in r["candidates"])
    assert r["raw_alpha_outside_bad"] == 0
    assert r["preexisting_identical"] and r["projection_outside_bad"] == 0
    assert all(c["outside_bad"] == 0 and c["inside_changed"] > 0 for c in r["candidates"])


def test_dead_engine_is_restarted_with_a_notice(edits):
    r = edits["restart"]
    assert r["restarts"] == 1 and r["new_pid_differs"]
    assert "restarting" in r["notice"]
    assert r["candidates"] == 2


def test_cancel_mid_job_changes_nothing(edits):
    r = edits["restart"]
    assert r["cancelled"][0] == "CancelledError", r["cancelled"]
    assert r["cancel_unchanged"]
    assert r["engine_alive_after_cancel"], "a cancelled job does not take the engine down"


def test_refusals_give_messages_and_change_nothing(edits):
    r = edits["refusals"]
    assert r["no_document"][0] == "NoDocumentError"
    assert r["no_selection"][0] == "NoSelectionError" and "whole layer" in r["no_selection"][1]
    assert r["no_selection_unchanged"]
    assert r["group_layer"][0] == "UnsupportedLayerError" and "group layer" in r["group_layer"][1]
    assert r["vector_layer"][0] == "UnsupportedLayerError" and "vector layer" in r["vector_layer"][1]
    assert r["scribble_without_layer"][0] == "NoScribbleLayerError"
    assert r["not_installed"][0] == "EngineNotInstalledError" and "install.py" in r["not_installed"][1]
    assert r["weights_missing"][0] == "WeightsMissingError", r["weights_missing"]
    assert (
        "256x256_diffusion_uncond.pt" in r["weights_missing"][1] and "install.py" in r["weights_missing"][1]
    )
    assert r["crash"][0] == "EngineCrashedError" and "RuntimeError: boom" in r["crash"][1]
    assert r["cancelled"][0] == "CancelledError"
    assert r["unchanged"], "no refusal changed a layer"
    assert r["cmyk"][0] == "UnsupportedColorSpaceError" and "CMYK" in r["cmyk"][1]
    assert r["whole_layer_region"] == [0, 0, 40, 30] and r["whole_layer_mask_min"] == 255
