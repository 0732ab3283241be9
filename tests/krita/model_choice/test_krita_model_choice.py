"""The Model choice in the docker and an edit with the latent method, inside real Krita 5.1 and Krita 6
(tests/conftest.py): model_choice/scenarios.py runs there, in one Krita process each (tests/krita_session.py),
the assertions are here."""

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

HERE = "tests.krita.model_choice.scenarios"
SCENARIOS = [
    Scenario("latent_edit", f"{HERE}:scenario_latent_edit", "real"),
    Scenario("latent_rounds", f"{HERE}:scenario_latent_rounds", "real"),
    Scenario("docker_models", f"{HERE}:scenario_docker_models"),  # its own fake engine and status
]


@pytest.fixture(scope="module")
def session(tmp_path_factory, krita):
    """The plugin's own engine started on the toy-latent preset (the Model choice's engine setting)."""
    home = tmp_path_factory.mktemp(f"models-{krita.label}")
    env = scenario_environment(
        home, "toy-latent", BD_ENGINE_LOG=str(home / "engine.log"), OMP_NUM_THREADS="1"
    )
    return run_session(krita, env, home, SCENARIOS)


def test_the_model_choice_lists_installed_presets_by_method(session):
    r = session["docker_models"]
    assert r["items"] == [
        ["toy — Blended Diffusion (paper), about 14 s a candidate", "toy"],
        ["toy-latent — Blended Latent Diffusion", "toy-latent"],
    ], "the not installed 'default' is left out"
    assert r["shown"] == "toy" and r["enabled"], "the engine's loaded preset is shown"
    assert "toy ADM" in r["tooltips"][0] and "no time measured yet" in r["tooltips"][1]
    assert r["modal_calls"] == []


def test_choosing_a_model_saves_it_and_configures_the_engine(session):
    r = session["docker_models"]
    assert r["saved_models"] == "toy-latent" and r["engine_models"] == "toy-latent"
    assert r["shown_after_choice"] == "toy-latent"
    assert r["enabled_remote"] is False, "a remote engine runs the preset its host started"


def test_a_feathered_latent_edit_in_krita_keeps_every_pixel_outside_the_selection(session):
    r = session["latent_edit"]
    assert (r["preset"], r["method"]) == ("toy-latent", "latent")
    assert len(r["candidates"]) == 2 and [n.split(" ")[0] for n in r["names"]] == ["#1", "#2"]
    for cand in r["candidates"]:
        assert cand["outside_bad"] == 0, cand
        assert cand["inside_changed"] > 0, cand
    assert r["projection_outside_bad"] == 0 and r["preexisting_identical"]
    method = [note for note in r["notes"] if note.startswith("Blended Latent Diffusion:")]
    assert method and "the soft selection as per-pixel strength" in method[0], r["notes"]
    assert "seam fix band" in method[0], "the latent default's seam lever (engine/editing/latent/seam.py)"


def test_more_vary_and_extend_with_the_latent_preset(session):
    r = session["latent_rounds"]
    assert r["more_added"] == 2 and r["vary_added"] >= 1
    assert r["round_candidates"] == 2 + 2 + r["vary_added"]
    assert r["round_outside_bad"] == [0] * r["round_candidates"], "every round keeps the outside"
    w, h = r["size_after_discard"]
    assert r["extend_size"] == [w + 12, h] and r["extend_layers"] == 1 and r["extend_source_kept"]
