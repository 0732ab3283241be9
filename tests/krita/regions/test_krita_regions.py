"""Regions in real Krita 5.1 and 6 (regions/scenarios.py, one Krita process each, the real bridge and the
tiny engine): two selection masks named by their prompts make one job and one group of candidates, every
pixel outside their union stays the source's, a hidden mask is skipped, More adds to the group and Accept
leaves one layer."""

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

HERE = "tests.krita.regions.scenarios"
SCENARIOS = [
    Scenario("regions", f"{HERE}:scenario_regions", "real"),
    Scenario("all_hidden", f"{HERE}:scenario_regions_all_hidden", "real"),
    Scenario("panel", f"{HERE}:scenario_regions_panel"),
]


@pytest.fixture(scope="module")
def regions(tmp_path_factory, krita):
    home = tmp_path_factory.mktemp(f"krita-regions-{krita.label}")
    env = scenario_environment(home, "tiny", BD_ENGINE_LOG=str(home / "engine.log"))
    return run_session(krita, env, home, SCENARIOS)


def names(stack):
    return [entry[0] for entry in stack]


def test_two_masks_make_one_job_and_one_group(regions):
    r = regions["regions"]
    assert r["listed"] == [["a red kite", True], ["Selection Mask 2", True], ["a calm sky", False]]
    # the hidden mask is not sent; the one with Krita's own name takes the docker's prompt
    assert r["sent_regions"] == ["a red kite", "a hot-air balloon"]
    assert r["sent_mask_is_union"]
    assert r["group_name"] == "BD: a red kite | a hot-air balloon"
    assert names(r["stack_after_edit"]) == [r["group_name"], "Background"]
    group = r["stack_after_edit"][0]
    assert [c[1] for c in group[3]] == ["paintlayer", "paintlayer"]
    assert any("2 regions" in note for note in r["notes"]), r["notes"]


def test_outside_the_union_and_the_hidden_mask_stay_the_source(regions):
    r = regions["regions"]
    assert len(r["candidates"]) == 2
    for cand in r["candidates"]:
        assert cand["outside_bad"] == 0, cand
        assert cand["inside_changed"] > 0, cand
    assert r["projection_outside_bad"] == 0
    assert r["hidden_region_touched"] == 0
    assert r["preexisting_identical"]  # the layer and its three masks, untouched


def test_more_and_accept_work_on_a_regions_group(regions):
    r = regions["regions"]
    assert r["more_added"] == 2 and r["candidates_after_more"] == 4
    assert r["more_outside_bad"] == 0
    assert names(r["stack_after_accept"]) == ["a red kite | a hot-air balloon", "Background"]
    assert r["stack_after_accept"][0][1] == "paintlayer"
    assert r["source_unchanged"]
    masks = r["stack_after_accept"][1][3]  # the source keeps its selection masks
    assert [m[0] for m in masks] == ["a calm sky", "Selection Mask 2", "a red kite"]


def test_hidden_masks_leave_the_edit_to_the_selection(regions):
    r = regions["all_hidden"]
    assert r["sent_regions"] == 0
    assert r["group_name"] == "BD: a red hot air balloon"
    assert r["outside_bad"] == 0


def test_the_dockers_list_shows_the_masks_and_renames_them(regions):
    r = regions["panel"]
    assert r["rows"] == ["a red kite", "a calm sky"]
    assert r["hidden_tip"] == "hidden: skipped by Edit with text" and r["editable"]
    assert r["summary"].startswith("Regions: 1 edited in one job, 1 hidden")
    assert r["mask_names_after_edit"] == ["a green kite", "a calm sky"]
    assert r["rows_after_poll"] == ["a green kite", "a calm sky"]
    # the candidate group (or one of its candidates) active: the regions of the layer it edited
    assert r["rows_from_group"] == [["a green kite", "a calm sky"]] * 2
    assert r["summary_without_layer"].startswith("Regions: none")
