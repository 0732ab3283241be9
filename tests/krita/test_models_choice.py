"""The docker's Model choice from an engine status (models_choice.py) and the engine settings it makes."""

import json

from blended_diffusion.engine_manager import saved_engine_settings
from blended_diffusion.models_choice import choices, current
from blended_diffusion.settings import SettingsStore

STATUS = {
    "device": "cpu",
    "models": {"preset": "toy"},
    "presets": [
        {
            "name": "default",
            "method": "paper",
            "method_name": "Blended Diffusion (paper)",
            "installed": False,
        },
        {
            "name": "toy-latent",
            "method": "latent",
            "method_name": "Blended Latent Diffusion",
            "installed": True,
            "estimate": 2.4,
            "description": "toy latent",
        },
        {
            "name": "toy",
            "method": "paper",
            "method_name": "Blended Diffusion (paper)",
            "installed": True,
            "estimate": 14.2,
            "description": "toy ADM",
        },
        {
            "name": "tiny",
            "method": "paper",
            "method_name": "Blended Diffusion (paper)",
            "installed": True,
            "estimate": None,
        },
    ],
}


def test_installed_presets_by_method_with_their_estimates():
    found = choices(STATUS)
    assert [c.name for c in found] == ["tiny", "toy", "toy-latent"], (
        "paper first, then latent; not installed left out"
    )
    assert found[1].label == "toy — Blended Diffusion (paper), about 14 s a candidate"
    assert found[2].label == "toy-latent — Blended Latent Diffusion, about 2 s a candidate"
    assert found[0].label == "tiny — Blended Diffusion (paper)"
    assert "no time measured yet" in found[0].tooltip and "this CPU" in found[1].tooltip


def test_the_loaded_preset_is_listed_even_when_not_installed_and_an_old_engine_lists_nothing():
    status = dict(STATUS, models={"preset": "default"})
    assert "default" in [c.name for c in choices(status)]
    assert choices({"models": {"preset": "toy"}}) == []
    assert current(STATUS, "") == "toy" and current(STATUS, "toy-latent") == "toy-latent"


def test_the_saved_model_reaches_the_engine_settings(tmp_path):
    path = tmp_path / "plugin-settings.json"
    path.write_text(json.dumps({"models": "toy-latent"}))
    assert saved_engine_settings(SettingsStore(str(path))).models == "toy-latent"
    assert saved_engine_settings(SettingsStore(str(tmp_path / "new.json"))).models == ""
