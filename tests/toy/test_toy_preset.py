"""The shipped toy preset: registry format, digests, size budget, and that the models learned something."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY_DIR = ROOT / "resources" / "models" / "toy"
BUILTIN = ROOT / "engine" / "models" / "presets" / "toy.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_preset_files_match_their_digests():
    folder_preset = json.loads((TOY_DIR / "preset.json").read_text())
    builtin = json.loads(BUILTIN.read_text())
    assert builtin["directory"] == "resources/models/toy"
    for kind in ("diffusion", "clip"):
        entry = folder_preset[kind]
        assert builtin[kind] == entry  # the built-in preset and the folder's describe the same files
        path = TOY_DIR / entry["file"]
        assert entry["kind"] == kind
        assert _sha256(path) == entry["sha256"]
        assert path.stat().st_size == entry["size_bytes"]
    assert folder_preset["diffusion"]["model_flags"]["learn_sigma"] is True
    assert folder_preset["edit_defaults"]["timestep_respacing"]


def test_shipped_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in TOY_DIR.iterdir() if p.is_file())
    assert total <= 25 * 1024 * 1024, f"resources/models/toy holds {total} bytes"


def test_registry_resolves_toy_by_name_and_folder():
    from engine.models.registry import get_preset

    by_name, by_folder = get_preset("toy"), get_preset(str(TOY_DIR))
    assert by_name.diffusion.path() == (TOY_DIR / "toy_unet.pt").resolve()
    assert by_folder.clip.path().resolve() == (TOY_DIR / "toy_clip.pt").resolve()
    assert by_name.diffusion.sha256 == by_folder.diffusion.sha256


def test_toy_models_load(toy_models):
    assert toy_models.preset == "toy"
    assert toy_models.image_size == 32 and toy_models.clip.image_size == 32
    assert toy_models.unet.out_channels == 6  # epsilon + learned-range variance


def test_toy_clip_reads_colour_and_shape_of_held_out_shapes(toy_models):
    """Zero-shot over the 18 prompts "a {colour} {shape}", on clean held-out masked single shapes."""
    from toyworld.clip_check import zero_shot

    result = zero_shot(toy_models.clip, count=180, seed=1)
    assert result["images"] == 180
    assert result["colour"] >= 0.95, result
    assert result["shape"] >= 0.8, result
    assert min(result["colour_per_colour"].values()) >= 0.8, result


def test_toy_adm_denoises_held_out_scenes(toy_models):
    """The trained epsilon beats predicting zero (MSE 1) by far at middle noise levels."""
    import torch

    from toyworld.data import scene_bank

    images, _ = scene_bank(16, 32, seed=98765)
    x_start = images.float() / 127.5 - 1
    diffusion = toy_models.diffusion("")
    generator = torch.Generator().manual_seed(0)
    errors = []
    for step in (100, 300, 500):
        t = torch.full((16,), step, dtype=torch.long)
        noise = torch.randn(x_start.shape, generator=generator)
        with torch.no_grad():
            out = toy_models.unet(diffusion.q_sample(x_start, t, noise), diffusion.model_timesteps(t))
        errors.append(((out[:, :3] - noise) ** 2).mean().item())
        assert out[:, 3:].abs().max() < 5  # the variance head stays near its [-1, 1] interpolation range
    assert max(errors) < 0.5, f"epsilon MSE {errors}"
