"""The few-step latent preset (issue 38): ``toy-latent-lcm``, toy-latent distilled to a latent consistency
model (toyworld/distill_latent.py), run by the same blended latent loop under diffusers' LCMScheduler with
its guidance folded in: one UNet pass a step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.editing.editor import edit
from engine.editing.latent.blended_latent import guided_eps
from engine.editing.shared.params import EditParams
from engine.errors import InputError
from engine.models import registry
from tests.engine.edit_scenes import shape_scene

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def lcm():
    from engine.models.loading import load_models

    return load_models("toy-latent-lcm", None, "cpu")


def _params(**values) -> EditParams:
    defaults = registry.get_preset("toy-latent-lcm").edit_defaults
    base = {**defaults, "prompt": "a red circle", "seed": 5, "precision": "fp32"}
    return EditParams(**{**base, **values})


def _pixels(result) -> dict:
    return {c.seed: np.asarray(c.image) for c in result.candidates}


def test_the_preset_steps_with_lcm_and_no_guidance_of_its_own(lcm):
    preset = registry.get_preset("toy-latent-lcm")
    assert preset.pipeline.scheduler == "lcm" and lcm.sampler == "lcm"
    assert type(lcm.scheduler()).__name__ == "LCMScheduler"
    assert lcm.guidance_scale == 1.0 and preset.edit_defaults["timestep_respacing"] == "4"
    # the VAE, text encoder and tokenizer are the teacher's own files
    teacher = {spec.file: spec.sha256 for spec in registry.get_preset("toy-latent").pipeline.files}
    shared = [spec for spec in preset.pipeline.files if not spec.file.startswith(("unet/", "scheduler/"))]
    assert len(shared) == 8  # vae/ (2), text_encoder/ (2), tokenizer/ (4)
    for spec in shared:
        assert spec.sha256 == teacher[spec.file], spec.file
    assert registry.get_preset("toy-latent").pipeline.scheduler == "ddim"


def test_a_few_step_edit_is_one_unet_pass_a_step_and_keeps_every_outside_pixel(lcm):
    batches = []
    hook = lcm.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    image, mask = shape_scene()
    try:
        result = edit(image, mask, lcm, _params(batch_size=2, iterations_num=1))
    finally:
        hook.remove()
    assert batches == [2, 2, 2, 2]  # 4 LCM steps, the two candidates together, no unconditional half
    assert "4 of 4 LCM steps, guidance 1" in result.notes[-1]
    outside, source = np.asarray(mask) == 0, np.asarray(image)
    for candidate in result.candidates:
        pixels = np.asarray(candidate.image.convert("RGB"))
        assert np.array_equal(pixels[outside], source[outside])
        assert not np.array_equal(pixels[~outside], source[~outside])  # something was drawn


def test_lcm_candidates_are_their_seeds_however_batched_and_leave_the_global_generator_alone(lcm):
    image, mask = shape_scene()
    state = torch.get_rng_state()
    together = _pixels(edit(image, mask, lcm, _params(batch_size=2, iterations_num=1)))
    apart = _pixels(edit(image, mask, lcm, _params(batch_size=1, iterations_num=2)))
    assert torch.equal(torch.get_rng_state(), state)  # LCM's re-noising drew from the seeds' generators
    assert sorted(together) == sorted(apart) == [5, 6]
    for seed, pixels in together.items():
        assert np.array_equal(pixels, apart[seed])
    # the step count changes the picture (a different schedule), not its outside
    eight = _pixels(edit(image, mask, lcm, _params(batch_size=1, iterations_num=1, timestep_respacing="8")))
    assert not np.array_equal(eight[5], together[5])


def test_guidance_scale_one_is_the_prompted_prediction_from_one_pass():
    calls = []

    class Unet:
        def __call__(self, z, t, encoder_hidden_states):
            calls.append(z.shape[0])
            scale = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # each row's own prompt
            return type("Out", (), {"sample": z * scale})()

    z, cond, uncond = torch.randn(3, 4, 2, 2), torch.full((1, 5, 8), 2.0), torch.full((1, 5, 8), 0.5)
    assert torch.equal(guided_eps(Unet(), z, 10, cond, uncond, 1.0), z * 2.0)
    assert calls == [3]
    guided = guided_eps(Unet(), z, 10, cond, uncond, 3.0)  # other scales: the doubled batch, as before
    assert calls == [3, 6] and torch.allclose(guided, z * (0.5 + 3.0 * 1.5))


def test_an_unknown_scheduler_is_refused_by_name(tmp_path):
    folder = tmp_path / "preset"
    shutil.copytree(ROOT / "resources" / "models" / "toy-latent-lcm", folder)
    data = json.loads((folder / "preset.json").read_text())
    data["pipeline"]["scheduler"] = "euler"
    (folder / "preset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="pipeline 'scheduler' must be one of .*'euler'"):
        registry.get_preset(str(folder))


def test_the_cli_edits_with_the_few_step_preset_and_its_defaults(tmp_path):
    import os
    import subprocess
    import sys

    image, mask = shape_scene()
    image.save(tmp_path / "image.png")
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "engine", "edit", "-p", "a red circle", "-i", str(tmp_path / "image.png"),
        "--mask", str(tmp_path / "mask.png"), "--models", "toy-latent-lcm", "--device", "cpu",
        "--batch_size", "2", "--output_path", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "Blended Latent Diffusion: 4 of 4 LCM steps, guidance 1" in done.stderr  # the preset's defaults
    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    outside, source = np.asarray(mask) == 0, np.asarray(image)
    for path in files:
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB"))[outside], source[outside])


def test_low_strength_keeps_the_presets_floor_of_free_steps() -> None:
    from engine.editing.latent.edit import schedule

    def ask(steps: int, skip: int) -> EditParams:
        return EditParams(timestep_respacing=str(steps), skip_timesteps=skip)

    assert schedule(ask(4, 0), 4) == (4, 0)  # strength 1: the 4 steps themselves
    assert schedule(ask(4, 2), 4) == (8, 4)  # strength 0.5: 4 of 8, not 2 of 4
    assert schedule(ask(4, 3), 4) == (16, 12)  # 0.25: 4 of 16
    assert schedule(ask(10, 7), 4) == (14, 10)  # 0.3: ceil(4 / 0.3) = 14, strength 4/14
    assert schedule(ask(50, 12), 4) == (50, 12)  # enough steps run: unchanged
    assert schedule(ask(4, 2)) == (4, 2)  # no floor: as asked
    assert registry.get_preset("toy-latent-lcm").pipeline.min_steps == 4
    assert registry.get_preset("toy-latent").pipeline.min_steps == 0


def test_a_half_strength_few_step_edit_runs_the_floor_and_says_so(lcm):
    batches = []
    hook = lcm.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    image, mask = shape_scene()
    try:
        result = edit(image, mask, lcm, _params(skip_timesteps=2, batch_size=2, iterations_num=1))
    finally:
        hook.remove()
    assert batches == [2, 2, 2, 2]  # 4 blends, not 2
    assert any("2 of 4 steps grew to 4 of 8" in note for note in result.notes), result.notes
    assert "4 of 8 LCM steps" in result.notes[-1]


def test_a_bad_floor_in_a_preset_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "preset"
    shutil.copytree(ROOT / "resources" / "models" / "toy-latent-lcm", folder)
    data = json.loads((folder / "preset.json").read_text())
    data["pipeline"]["min_steps"] = -1
    (folder / "preset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="'min_steps' must be a whole number >= 0, got -1"):
        registry.get_preset(str(folder))
