"""toyworld.distill_latent (issue 38): a few steps of tiny data from the shipped teacher, so the plumbing is
checked (a loadable LCM preset beside the teacher's own files; a resumed run goes on from its student and
counts both runs), not the student's quality."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from toyworld import distill_latent

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "resources" / "models" / "toy-latent"


def _unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_a_distilled_student_loads_as_an_lcm_preset_beside_the_teachers_files(tmp_path):
    from engine.models.loading import load_models

    out = tmp_path / "student"
    argv = ["--out", str(out), "--scenes", "4", "--steps", "2", "--batch", "2", "--solver-steps", "20"]
    assert distill_latent.main(argv) == 0
    for part in ("vae", "text_encoder", "tokenizer"):  # the teacher's, byte for byte
        for path in (TEACHER / part).iterdir():
            assert (out / part / path.name).read_bytes() == path.read_bytes(), path
    teacher, student = _unet_weights(TEACHER), _unet_weights(out)
    assert teacher.keys() == student.keys()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)  # the student was trained
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "LCMScheduler" and scheduler["original_inference_steps"] == 20
    models = load_models(str(out), None, "cpu")  # verified against the digests the preset recorded
    assert models.sampler == "lcm" and models.guidance_scale == 1.0
    training = json.loads((out / "preset.json").read_text())["training"]
    assert training["steps"] == 2 and "one step of 50 timesteps" in training["solver"]

    again = tmp_path / "again"
    assert distill_latent.main(["--out", str(again), "--resume", str(out), *argv[2:]]) == 0
    resumed = json.loads((again / "preset.json").read_text())["training"]
    assert resumed["steps"] == 4 and resumed["command"].count("distill_latent") == 2
    assert any(not torch.equal(student[k], _unet_weights(again)[k]) for k in student)


def test_the_boundary_conditions_are_the_ones_lcm_scheduler_samples_with():
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(timestep_scaling=distill_latent.TIMESTEP_SCALING)
    t = torch.tensor([0, 1, 19, 259, 999])
    c_skip, c_out = distill_latent.boundary(t)
    for i, step in enumerate(t.tolist()):
        expected_skip, expected_out = scheduler.get_scalings_for_boundary_condition_discrete(step)
        assert abs(c_skip[i].item() - float(expected_skip)) < 1e-6
        assert abs(c_out[i].item() - float(expected_out)) < 1e-6
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # f(z, 0) = z: the trajectory's end
