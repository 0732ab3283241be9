"""The plugin inside real Krita: kritarunner runs krita_scenarios.py (offscreen, with a throw-away HOME so
the user's Krita configuration is untouched) and the assertions here read the JSON it writes.

The edit scenarios go through the real bridge to a real engine (`python -m engine serve --models tiny`,
started by the plugin's own EngineManager with this venv's Python); the refusal scenario uses a fake
engine only where a crash or cancellation must be staged."""

import re

import pytest

from tests.krita_env import run_scenarios, scenario_environment


@pytest.fixture(scope="session")
def krita_env(tmp_path_factory, krita):
    """A throw-away home per Krita (5.1 here, 6 in its root: tests/krita/conftest.py)."""
    home = tmp_path_factory.mktemp(f"krita-home-{krita.label}")
    return scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log")), home, krita


def run_krita(krita_env, engine: str, *scenarios: str, timeout: int = 400) -> dict:
    env, home, krita = krita_env
    out = home / f"result-{engine}-{'-'.join(scenarios)}.json"
    results = run_scenarios(
        env, home, "krita_scenarios", out, engine, *scenarios, timeout=timeout, krita=krita
    )
    for name in scenarios:
        assert name in results, f"scenario {name} did not run"
        assert "error" not in results[name], results[name].get("traceback", results[name].get("error"))
    return results


@pytest.fixture(scope="session")
def real(krita_env):
    """One Krita process, one engine: the three edit scenarios share the tiny engine's start-up."""
    return run_krita(krita_env, "real", "edit", "scribble", "depth16", "depthf16", "restart")


@pytest.fixture(scope="session")
def fake_runs(krita_env):
    """Refusals and the docker: a fake engine stages crashes and keeps the GUI checks fast (the real
    engine still runs once here, to show the missing-weights message)."""
    return run_krita(krita_env, "fake", "refusals", "docker", "docker_extend", timeout=260)


@pytest.fixture(scope="session")
def refusals(fake_runs):
    return fake_runs["refusals"]


def names(stack):
    return [entry[0] for entry in stack]


def test_edit_adds_group_with_candidates_above_source(real):
    r = real["edit"]
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


def test_edit_never_touches_preexisting_layers(real):
    for name in ("edit", "scribble", "depth16", "depthf16"):
        assert real[name]["preexisting_identical"], name
    assert real["edit"]["preexisting_identical_after_accept"]


def test_candidates_equal_source_outside_selection(real):
    for name in ("edit", "scribble", "depth16"):
        r = real[name]
        assert len(r["candidates"]) == 2
        for cand in r["candidates"]:
            assert cand["outside_bad"] == 0, (name, cand)
            assert cand["inside_changed"] > 0, (name, cand)  # the engine did edit inside the selection
        assert r["projection_outside_bad"] == 0, name


def test_choose_accept_and_discard(real):
    r = real["edit"]
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


def test_scribble_mode_sends_strokes_from_layer_above(real):
    r = real["scribble"]
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
def test_16bit_documents(real, scenario, depth):
    r = real[scenario]
    assert r["doc_depth"] == depth
    assert [c["depth"] for c in r["candidates"]] == [depth, depth]
    assert all(c["bytes"] == 96 * 64 * 8 for c in r["candidates"])
    assert r["raw_alpha_outside_bad"] == 0
    assert r["preexisting_identical"] and r["projection_outside_bad"] == 0
    assert all(c["outside_bad"] == 0 and c["inside_changed"] > 0 for c in r["candidates"])


def test_dead_engine_is_restarted_with_a_notice(real):
    r = real["restart"]
    assert r["restarts"] == 1 and r["new_pid_differs"]
    assert "restarting" in r["notice"]
    assert r["candidates"] == 2


def test_cancel_mid_job_changes_nothing(real):
    r = real["restart"]
    assert r["cancelled"][0] == "CancelledError", r["cancelled"]
    assert r["cancel_unchanged"]
    assert r["engine_alive_after_cancel"], "a cancelled job does not take the engine down"


def test_refusals_give_messages_and_change_nothing(refusals):
    r = refusals
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


def test_docker_settings_edit_and_review(fake_runs):
    r = fake_runs["docker"]
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


def test_docker_size_never_changes(fake_runs):
    """Settings, an expanded section, a live preview, a long message, the candidate list and Accept leave
    the dock's size hints as they were: the plugin never resizes Krita's canvas (a canvas resized as the
    status bar's progress bar appears deadlocks Krita 5.1; docs/troubleshooting.md)."""
    sizes = fake_runs["docker"]["sizes"]
    assert len(sizes) == 5
    assert all(s == sizes[0] for s in sizes), sizes


@pytest.fixture(scope="session")
def extended(krita_env):
    """Extend Canvas with Text through the real engine (tiny models)."""
    return run_krita(krita_env, "real", "extend")["extend"]


def test_extend_grows_the_canvas_and_adds_candidates_on_top(extended):
    r = extended
    w, h = r["size_before"]
    assert r["size_after"] == [w + 16 + 13, h]
    assert names(r["stack_before"]) == ["Notes", "Background"]
    assert names(r["stack_after"]) == ["BD: left: hell | right: heaven", "Notes", "Background"]
    children = r["stack_after"][0][3]
    assert len(children) == 2 and [c[2] for c in children] == [True, False]
    assert r["progress_last"][0] == r["progress_last"][1] > 0


def test_extend_keeps_original_pixels_byte_for_byte(extended):
    r = extended
    assert r["preexisting_at_offset"], "pre-existing layers keep their pixels at the new offset"
    assert r["preexisting_new_area_alpha"] == [[0, 0], [0, 0]], "nothing appears in their new area"
    for cand in r["candidates"]:
        assert cand["alpha_over_original"] == [0, 0], cand  # the candidate never covers the old image
        assert cand["alpha_left"] == [255, 255] and cand["alpha_right"] == [255, 255], cand
        assert cand["projection_original_identical"], cand
    assert r["candidates"][0]["new_area_sha"] != r["candidates"][1]["new_area_sha"]


def test_extend_accept_and_discard(extended):
    r = extended
    assert names(r["stack_after_accept"]) == ["left: hell | right: heaven", "Notes", "Background"]
    assert r["size_after_accept"] == r["size_after"] and r["accepted_matches_candidate"]
    assert r["size_during_second"] == [r["size_after"][0], r["size_after"][1] + 9]
    assert r["second_group"] == "BD: grass"
    assert r["discard_size"] == r["size_after"], "Discard returns the canvas to its old size"
    assert r["discard_restores_stack"] and r["discard_restores_pixels"]
    assert r["choose_after_discard"] == "StaleResultError"


def test_extend_refusals_change_nothing(extended):
    r = extended
    assert "at least one side" in r["refusals"]["no side"]
    assert "left size must be between 0" in r["refusals"]["negative"]
    assert "prompt for the top side" in r["refusals"]["prompt without side"]
    assert r["refusals_changed_nothing"]


def test_docker_extend_section_grows_and_discard_restores(fake_runs):
    r = fake_runs["docker_extend"]
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
