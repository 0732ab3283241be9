"""The presets a status offers the plugin's model choice (engine/models/catalog.py, runner_status.presets):
each with its method, installed or not by its files, and a time estimate once its steps were measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.catalog import catalog, installed
from engine.models.registry import get_preset


def by_name(entries):
    return {entry["name"]: entry for entry in entries}


def test_every_preset_is_listed_with_its_method(weights_dir: Path) -> None:
    found = by_name(catalog(weights_dir))
    assert {"default", "tiny", "toy", "sd15", "sdxl"} <= set(found)
    assert found["default"]["method"] == "paper" and found["sd15"]["method"] == "latent"
    assert found["sd15"]["method_name"] == "Blended Latent Diffusion"
    assert found["toy"]["installed"], "the toy files ship with the repository"
    assert found["tiny"]["installed"], "made on first use"
    assert not found["default"]["installed"] and not found["sd15"]["installed"], "nothing downloaded here"


def test_installed_means_every_required_file_present(weights_dir: Path) -> None:
    """Presence (at the recorded size where one is recorded); the digests are checked when it loads."""
    preset = get_preset("default")
    paths = [spec.path(weights_dir) for spec in preset.required_models]
    for spec, path in zip(preset.required_models, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # sparse: the recorded size without writing it
            handle.truncate(spec.size_bytes or 10)
    assert installed(preset, weights_dir)
    paths[-1].unlink()
    assert not installed(preset, weights_dir)
    paths[-1].write_bytes(b"x" * 3)
    sized = preset.required_models[-1].size_bytes
    assert installed(preset, weights_dir) == (not sized), "a file of another size than recorded is not"


def test_a_placed_latent_folder_is_installed(weights_dir: Path) -> None:
    preset = get_preset("sd15")
    for spec in preset.required_models:
        if spec.kind == "pipeline_file":
            path = spec.path(weights_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"{}")
    clip_ok = preset.clip is None or installed_file(preset.clip, weights_dir)
    assert installed(preset, weights_dir) == clip_ok


def installed_file(spec, weights_dir: Path) -> bool:
    from engine.models.weights import check_file

    return check_file(spec, weights_dir, hash_file=False).state in ("ok", "unchecked", "unrecorded")


def test_status_lists_presets_with_estimates_once_measured(tiny_models, tmp_path, monkeypatch) -> None:
    from bridge.protocol import Limits
    from engine.editing.timing import StepTimes, store_key
    from engine.jobs import EditRunner

    monkeypatch.setenv("BLENDED_DIFFUSION_STEP_TIMES", str(tmp_path / "times.json"))
    runner = EditRunner(tiny_models, Limits())
    before = by_name(runner.status()["presets"])
    assert before["tiny"]["installed"] and before["tiny"]["estimate"] is None
    StepTimes().put(store_key("cpu", "toy"), {"guided": 0.5, "unguided": 0.1})
    status = runner.status()
    after = by_name(status["presets"])
    assert after["toy"]["estimate"] == pytest.approx(status_estimate("toy"), rel=1e-6)
    assert after["toy"]["estimate"] > 0 and after["tiny"]["estimate"] is None
    StepTimes().put(store_key("cpu", "toy-latent"), {"guided": 0.02})
    latent = by_name(runner.status()["presets"])["toy-latent"]
    assert latent["method"] == "latent" and latent["estimate"] == pytest.approx(status_estimate("toy-latent"))
    assert latent["estimate"] >= 0.02 * 30, "the latent schedule's guided steps (38 of 50)"
    assert status["models"]["preset"] == "tiny" and status["models"]["method"] == "paper"
    json.dumps(status["presets"])  # travels as JSON


def status_estimate(name: str) -> float:
    from engine.editing.timing import StepTimes, mode_estimates, store_key

    return mode_estimates(StepTimes().get(store_key("cpu", name)), get_preset(name).edit_defaults)["paper"]
