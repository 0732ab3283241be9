"""The plugin's "Check engine" report, outside Krita: from a status reply, and from the local engine's
``python -m engine doctor`` when the engine cannot start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "krita_plugin"))

from blended_diffusion import doctor  # noqa: E402
from blended_diffusion.engine_manager import EngineSettings  # noqa: E402


@pytest.fixture
def engine_json(tmp_path, monkeypatch):
    def write(models: str) -> EngineSettings:
        path = tmp_path / "engine.json"
        record = {"python": sys.executable, "engine_root": str(ROOT), "models": models, "weights_dir": None}
        path.write_text(json.dumps(record))
        monkeypatch.setenv("BLENDED_DIFFUSION_WEIGHTS", str(tmp_path / "weights"))
        return EngineSettings(config_path=str(path))

    return write


def test_a_status_reply_with_a_report_is_shown_as_the_engine_wrote_it():
    status = {"device": "cuda", "doctor": {"text": "Blended Diffusion engine 0.1.0\nPreset: default [ready]"}}
    text = doctor.compose(EngineSettings(mode="remote", host="gpu", port=7860), "/x/engine.log", status)
    assert text.splitlines()[1] == "Engine: remote at gpu:7860 (its log is on that machine)"
    assert text.endswith("Blended Diffusion engine 0.1.0\nPreset: default [ready]")


def test_an_older_engine_without_a_report_still_gets_its_status_shown():
    status = {"device": "mps", "models": {"preset": "toy"}, "versions": {"engine": "0.0.9", "protocol": 1}}
    text = doctor.status_report(status)
    assert "update it" in text and "Device: mps" in text and "Preset: toy" in text
    assert "engine 0.0.9" in text


def test_the_doctor_command_uses_the_recorded_engine(engine_json):
    settings = engine_json("toy")
    settings.device = "cpu"
    call = doctor.doctor_command(settings, "/logs/engine.log")
    assert call["argv"] == [
        sys.executable, "-m", "engine", "doctor", "--models", "toy", "--device", "cpu",
        "--log-file", "/logs/engine.log",
    ]  # fmt: skip
    assert call["cwd"] == str(ROOT) and call["env"]["PYTHONPATH"].split(":")[0] == str(ROOT)


def test_the_local_doctor_reports_missing_weights_and_where_to_get_them(engine_json, tmp_path):
    text = doctor.run_local_doctor(engine_json("default"), str(tmp_path / "engine.log"))
    assert "Preset: default [NOT READY]" in text
    assert f"{tmp_path / 'weights' / '256x256_diffusion_uncond.pt'}: MISSING" in text
    assert "python -m engine download default" in text


def test_no_engine_configuration_is_itself_the_finding(tmp_path):
    settings = EngineSettings(config_path=str(tmp_path / "absent.json"))
    assert "not installed" in doctor.run_local_doctor(settings, None)
