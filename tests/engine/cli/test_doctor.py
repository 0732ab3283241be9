"""``python -m engine doctor`` and the ``doctor`` part of the server's status reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bridge.protocol import Limits
from engine import diagnostics
from engine.jobs import EditRunner

ROOT = Path(__file__).resolve().parents[3]


def doctor(*args: str, weights: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BLENDED_DIFFUSION_WEIGHTS=str(weights))
    return subprocess.run(
        [sys.executable, "-m", "engine", "doctor", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_doctor_on_the_shipped_toy_models_is_healthy(tmp_path):
    result = doctor(
        "--models", "toy", "--device", "cpu", "--log-file", str(tmp_path / "e.log"), weights=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Preset: toy [ready]" in text
    assert text.count("present, SHA-256 verified") == 2  # the UNet and the CLIP file, hashed
    assert "Device: cpu" in text and "GiB free of" in text
    from engine.models.devices import cpu_has_native_bf16

    native = cpu_has_native_bf16()  # what auto picks here, and why, from the same probe
    assert ("Precision: bf16 for the UNets, CLIP in fp32 (this CPU has " in text) is native
    assert ("Precision: fp32 (this CPU has no AVX-512 BF16 or AMX" in text) is not native
    assert f"torch {metadata.version('torch')}" in text
    assert f"torch build {__import__('torch').__version__}" in text
    assert f"Log: {tmp_path / 'e.log'}" in text


def test_doctor_names_each_missing_file_where_it_goes_and_how_to_get_it(tmp_path):
    result = doctor("--models", "default", "--json", weights=tmp_path)
    assert result.returncode == 1  # not ready: scripts can tell
    data = json.loads(result.stdout)
    preset = data["preset"]
    assert preset["name"] == "default" and preset["ready"] is False
    missing = [f for f in preset["files"] if f["state"] == "missing"]
    assert {f["kind"] for f in missing} >= {"diffusion", "clip"}
    assert all(Path(f["path"]).parent == tmp_path for f in missing)
    text = diagnostics.format_report(data)
    assert "256x256_diffusion_uncond.pt: MISSING" in text
    assert "download from https://" in text and "python -m engine download default" in text


def test_doctor_reports_an_unknown_preset_and_a_bad_device_without_a_traceback(tmp_path):
    result = doctor("--models", "no-such-preset", "--device", "cuda:7", weights=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "Preset: no-such-preset [NOT READY]: Unknown models preset" in result.stdout
    assert "Device: cuda:7:" in result.stdout and "not available" in result.stdout


def test_the_status_reply_carries_the_report_for_the_plugin(tiny_models, tmp_path):
    runner = EditRunner(tiny_models, Limits(), log_path=str(tmp_path / "serve.log"), preset_ref="tiny")
    status = runner.status()
    report = status["doctor"]
    assert report["preset"]["name"] == "tiny" and report["preset"]["ready"] is True
    assert report["device"]["device"] == "cpu" and report["log"] == str(tmp_path / "serve.log")
    assert report["text"] == diagnostics.format_report(report)
    json.dumps(status)  # it travels as JSON


def test_the_default_edit_estimate_adds_the_stored_time_outside_the_steps():
    import torch

    from engine.editing.shared.params import preset_edit_defaults
    from engine.editing.timing import StepTimes, device_key, mode_estimates
    from engine.models.registry import get_preset

    assert diagnostics.stored_estimate("toy", "cpu") is None  # nothing measured on this device yet
    times = {"guided": 0.02, "unguided": 0.007, "edit": 0.5, "run": 0.25, "candidate": 0.04}
    StepTimes().put(f"{device_key(torch.device('cpu'))}|toy", times)  # the test's own file (conftest)
    estimate = diagnostics.stored_estimate("toy", "cpu", candidates=4)
    paper = mode_estimates(times, preset_edit_defaults(get_preset("toy")))["paper"]
    assert estimate["seconds"] == 4 * paper + 0.5 + 0.25  # one run of 4, as the plugin sends them
    assert estimate["per_edit"] == 0.75 and "0.8 s per edit besides" in estimate["text"]
