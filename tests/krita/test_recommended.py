"""The engine preset's recommended settings as the docker's defaults (plain Python, no Krita)."""

import json

from blended_diffusion import recommended, settings
from blended_diffusion.params import EditOptions

TOY = {  # a preset's edit_defaults (the toy preset's before issue 12 retrained it)
    "timestep_respacing": "25",
    "skip_timesteps": 5,
    "clip_guidance_lambda": 500,
    "range_lambda": 50,
    "aug_num": 8,
    "batch_size": 4,
    "iterations_num": 1,
}
TOY_STATUS = {"device": "cpu", "models": {"preset": "toy", "edit_defaults": TOY}}
REFERENCE = {"candidates": 4, "strength": 0.75, "steps": 100, "guidance_scale": 1000.0, "aug_num": 8}


def current(store):
    return {key: store.get(key) for key in settings.PRESET_KEYS}


def test_edit_defaults_become_docker_settings():
    assert recommended.from_edit_defaults(TOY) == {
        "steps": 25,
        "strength": 0.8,  # 5 of 25 steps skipped
        "guidance_scale": 500.0,
        "aug_num": 8,
        "candidates": 4,
    }
    assert recommended.defaults({}) == REFERENCE  # no recommendation: the reference's values
    # skip_timesteps alone is read against the reference's 100 steps; odd schedules give no step count
    assert recommended.from_edit_defaults({"skip_timesteps": 40}) == {"strength": 0.6}
    assert recommended.from_edit_defaults({"timestep_respacing": "ddim50"}) == {}
    # values the docker cannot show are left out rather than clamped or crashing
    assert recommended.from_edit_defaults({"batch_size": 8, "iterations_num": 4, "aug_num": 0}) == {}
    assert recommended.preset_of({"device": "cpu"}) == (None, {})
    assert recommended.preset_of(TOY_STATUS) == ("toy", TOY)


def test_status_sets_defaults_user_values_persist_and_reset(tmp_path):
    path = str(tmp_path / "plugin-settings.json")
    store = settings.SettingsStore(path)
    assert current(store) == REFERENCE
    assert "read when it first starts" in recommended.summary(store)
    assert recommended.remember(store, TOY_STATUS, "local")
    assert current(store) == {
        "candidates": 4,
        "strength": 0.8,
        "steps": 25,
        "guidance_scale": 500.0,
        "aug_num": 8,
    }
    line = recommended.summary(store)
    assert line == (
        "Defaults from preset 'toy': 4 candidates, strength 0.80, 25 steps, guidance 500, 8 augmentations."
    )
    store.set("steps", 40)
    store.mark_changed("steps")
    store.mark_changed("prompt")  # not a preset setting: not tracked
    store.save()
    # A restart: the user's value and the last known preset's defaults are both back.
    again = settings.SettingsStore(path)
    assert again.user_changed == ["steps"] and again.get("steps") == 40
    assert again.get("guidance_scale") == 500.0 and "Yours: steps." in recommended.summary(again)
    assert not recommended.apply(again)  # nothing to move
    # Another preset on the same engine (install.py --models ...): the defaults follow, the user's stay.
    recommended.remember(again, {"models": {"preset": "default", "edit_defaults": {}}}, "local")
    assert current(again) == dict(REFERENCE, steps=40)
    assert "preset 'default' recommends nothing" in recommended.summary(again)
    recommended.remember(again, TOY_STATUS, "local")
    recommended.reset(again)
    assert again.user_changed == [] and again.get("steps") == 25
    # A remote engine never seen: the reference's values until it answers; back to local: toy again.
    again.set("engine_mode", "remote")
    assert recommended.engine_key(again) == "remote 127.0.0.1:7860"
    assert recommended.apply(again) and current(again) == REFERENCE
    again.set("engine_mode", "local")
    assert recommended.apply(again) and again.get("steps") == 25
    again.save()
    stored = json.loads((tmp_path / "plugin-settings.json").read_text())
    assert stored["engine_presets"]["local"] == {"preset": "toy", "edit_defaults": TOY}


def test_broken_stored_records_are_ignored(tmp_path):
    path = tmp_path / "plugin-settings.json"
    path.write_text(
        json.dumps({"user_changed": "steps", "engine_presets": {"local": [1], "x": {"preset": 1}}})
    )
    store = settings.SettingsStore(str(path))
    assert store.user_changed == [] and store.engine_presets == {}


def test_an_edit_takes_the_engines_values_where_the_user_chose_none():
    options = EditOptions(prompt="a red circle", candidates=4, strength=0.75, steps=30, guidance_scale=1000)
    params = recommended.resolve(options, TOY, {"steps"}, seed=7)
    assert params["timestep_respacing"] == "30"  # the user's
    assert params["skip_timesteps"] == 6  # the preset's strength 0.8 of the user's 30 steps
    assert params["clip_guidance_lambda"] == 500.0 and params["seed"] == 7
    assert params["batch_size"] * params["iterations_num"] == 4
    untouched = recommended.resolve(options, {}, set(), seed=7)
    assert untouched["timestep_respacing"] == "100" and untouched["clip_guidance_lambda"] == 1000.0


def test_settings_from_before_presets_keep_the_users_values(tmp_path):
    """A settings file an older plugin wrote has no user_changed: values other than the reference's were
    chosen by the user and must not be replaced by a preset's."""
    path = tmp_path / "plugin-settings.json"
    path.write_text(json.dumps({"steps": 50, "candidates": 4, "guidance_scale": 1000.0, "prompt": "a cat"}))
    store = settings.SettingsStore(str(path))
    assert store.user_changed == ["steps"]
    recommended.remember(store, TOY_STATUS, "local")
    assert store.get("steps") == 50 and store.get("guidance_scale") == 500.0 and store.get("strength") == 0.8
