"""Latent presets: a diffusers folder made here (tiny random models, save_pretrained) loads through the
registry with its files verified, and edit() runs Blended Latent Diffusion on it with the product's
composite (the source byte for byte where the soft mask is 0)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.editing.editor import EditParams, edit
from engine.errors import WeightsCorruptError
from engine.models import registry
from engine.models.loading import load_models

ROOT = Path(__file__).resolve().parents[3]
CAPTIONS = ["a red circle", "a blue square on a white background", "a green triangle and a cyan circle"]


def make_latent_folder(folder: Path, digests: bool = True) -> Path:
    """Tiny random VAE / text encoder / UNet / tokenizer / DDIM scheduler in diffusers' layout, and a
    preset.json naming each file (with its SHA-256 and size, or none: a folder placed by hand)."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    from toyworld import train_latent

    torch.manual_seed(0)
    vocab, merges = train_latent.write_tokenizer_files(CAPTIONS, folder / "tokenizer")
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=train_latent.MAX_TOKENS)
    bos, eos = tokenizer.convert_tokens_to_ids(list(train_latent.SPECIALS))
    vae, text_encoder, unet = train_latent.build_models(len(tokenizer), bos, eos)
    for model, sub in ((vae, "vae"), (unet, "unet"), (text_encoder, "text_encoder")):
        model.save_pretrained(folder / sub)
    tokenizer.save_pretrained(folder / "tokenizer")
    DDIMScheduler(**train_latent.SCHEDULE, steps_offset=1).save_pretrained(folder / "scheduler")
    files = train_latent.folder_files(folder)
    if not digests:
        files = {rel: {} for rel in files}
    preset = {
        "name": "tiny-latent",
        "method": "latent",
        "description": "tiny random latent models (test)",
        "pipeline": {
            "family": "sd",
            "resolution": 32,
            "dtype": "fp32",
            "guidance_scale": 3.0,
            "files": files,
        },
        "edit_defaults": {
            "timestep_respacing": "10",
            "skip_timesteps": 3,
            "batch_size": 2,
            "iterations_num": 1,
        },
    }
    (folder / "preset.json").write_text(json.dumps(preset))
    return folder


@pytest.fixture(scope="module")
def latent_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_latent_folder(tmp_path_factory.mktemp("tiny-latent"))


@pytest.fixture(scope="module")
def latent_models(latent_folder: Path):
    return load_models(str(latent_folder), device="cpu")


def test_a_folder_in_diffusers_layout_loads_as_a_latent_preset(latent_folder, latent_models):
    preset = registry.get_preset(str(latent_folder))
    assert preset.method == "latent" and preset.diffusion is None and preset.clip is None
    assert preset.pipeline.root == latent_folder.resolve() and preset.pipeline.guidance_scale == 3.0
    assert {s.file for s in preset.required_models} >= {"unet/config.json", "vae/config.json"}
    models = latent_models
    assert type(models).__name__ == "LatentModels" and models.image_size == 32 and models.method == "latent"
    assert type(models.unet).__name__ == "UNet2DConditionModel" and models.dtype == torch.float32
    assert models.encode_prompt("a red circle").states.shape == (1, 32, 32)
    assert not any(p.requires_grad for p in models.unet.parameters())


def test_a_changed_file_is_refused(latent_folder, tmp_path):
    copy = shutil.copytree(latent_folder, tmp_path / "copy")
    with open(copy / "unet" / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(WeightsCorruptError, match="config.json"):
        load_models(str(copy), device="cpu")


def test_a_folder_placed_by_hand_has_its_digests_recorded_on_first_load(tmp_path):
    folder = make_latent_folder(tmp_path / "placed", digests=False)
    load_models(str(folder), device="cpu")
    recorded = folder / "unet" / "diffusion_pytorch_model.safetensors.sha256"
    assert recorded.is_file() and len(recorded.read_text().split()[0]) == 64


def make_sdxl_folder(folder: Path) -> Path:
    """A tiny SDXL-shaped folder: two text encoders (the second with a projection), text_time conditioning."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    make_latent_folder(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer.save_pretrained(folder / "tokenizer_2")
    config = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    config.projection_dim = 16
    torch.manual_seed(1)
    CLIPTextModelWithProjection(config).save_pretrained(folder / "text_encoder_2")
    unet = UNet2DConditionModel(
        sample_size=16,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # both encoders' widths side by side
        attention_head_dim=8,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16,  # six size numbers + the pooled projection
    )
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet")
    from toyworld import train_latent

    preset = json.loads((folder / "preset.json").read_text())
    preset["pipeline"].update(family="sdxl", files=train_latent.folder_files(folder))
    (folder / "preset.json").write_text(json.dumps(preset))
    return folder


def test_an_sdxl_folder_edits_with_two_encoders_and_size_conditioning(tmp_path):
    models = load_models(str(make_sdxl_folder(tmp_path / "xl")), device="cpu")
    assert models.family == "sdxl" and models.text_encoder_2 is not None
    prompted, empty = models.encode_prompt("a red circle"), models.encode_prompt("")
    assert prompted.states.shape == (1, 32, 64) and prompted.added["text_embeds"].shape == (1, 16)
    assert prompted.added["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    assert not empty.states.any() and not empty.added["text_embeds"].any()  # zeros for the empty prompt
    image, mask = _scene()
    params = EditParams(prompt="a red circle", timestep_respacing="6", skip_timesteps=2, batch_size=2)
    params.iterations_num = 1
    result = edit(image, Image.fromarray(mask), models, params)
    for candidate in result.candidates:
        assert np.array_equal(np.asarray(candidate.image)[mask == 0], np.asarray(image)[mask == 0])


@pytest.mark.parametrize(
    "name,resolution,guidance,licence",
    [
        ("sd15", 512, 7.5, "CreativeML OpenRAIL-M"),
        ("sd21-base", 512, 7.5, "CreativeML Open RAIL++-M"),
        ("sdxl", 1024, 5.0, "CreativeML Open RAIL++-M"),
    ],
)
def test_stable_diffusion_presets_are_data(name, resolution, guidance, licence):
    preset = registry.get_preset(name)
    assert preset.method == "latent" and preset.pipeline.resolution == resolution
    assert preset.pipeline.guidance_scale == guidance and preset.clip.file == "ViT-B-16.pt"
    assert preset.pipeline.licence == licence
    assert any(
        s.file == f"{name}/unet/diffusion_pytorch_model.fp16.safetensors" for s in preset.pipeline.files
    )


def test_models_command_says_how_to_get_a_missing_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "models", "--quick", "--weights-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    sd15 = result.stdout.split("\nsd15:")[1].split("\n\n")[0]
    assert "run `python -m engine download sd15`" in sd15 and str(tmp_path / "sd15") in sd15
    assert "licence: CreativeML OpenRAIL-M" in sd15
    # a preset naming no hub repository: its folder is placed by hand, and download says where
    folder = tmp_path / "by-hand"
    folder.mkdir()
    data = {
        "method": "latent",
        "pipeline": {"resolution": 32, "guidance_scale": 3.0, "files": {"unet/a": {}}},
    }
    (folder / "preset.json").write_text(json.dumps(data))
    result = subprocess.run(
        [sys.executable, "-m", "engine", "download", str(folder)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 1 and "place the model's folder in diffusers layout (unet/)" in result.stderr


def _scene():
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))
    mask = np.zeros((40, 52), np.uint8)
    mask[10:26, 20:40] = 255
    mask[10:26, 20] = 90  # a feathered edge
    return image, mask


def test_edit_keeps_the_source_outside_the_soft_mask(latent_models):
    image, mask = _scene()
    params = EditParams(prompt="a red circle", timestep_respacing="10", skip_timesteps=3, batch_size=2)
    params.iterations_num = 2
    steps = []
    result = edit(image, Image.fromarray(mask), latent_models, params, progress=steps.append)
    assert [c.rank for c in result.candidates] == [1, 2, 3, 4]
    assert sorted(c.seed for c in result.candidates) == [404, 405, 406, 407]
    source = np.asarray(image)
    for candidate in result.candidates:
        out = np.asarray(candidate.image)
        assert np.array_equal(out[mask == 0], source[mask == 0])
        assert not np.array_equal(out[mask == 255], source[mask == 255])
        assert candidate.scores["combined"] is None  # no ranking CLIP in this preset
    assert steps[-1].step == steps[-1].total == 7 * 4
    assert any("Blended Latent Diffusion: 7 of 10 DDIM steps" in note for note in result.notes)


def test_scribble_and_inverted_mask(latent_models):
    image, mask = _scene()
    base = EditParams(prompt="a red circle", timestep_respacing="10", skip_timesteps=5, batch_size=1)
    base.iterations_num = 1
    plain = edit(image, Image.fromarray(mask), latent_models, base).candidates[0].image
    scribble = np.asarray(image).copy()
    scribble[10:26, 20:40] = (255, 0, 0)
    scribbled = edit(image, Image.fromarray(mask), latent_models, base, init_image=Image.fromarray(scribble))
    assert not np.array_equal(np.asarray(plain), np.asarray(scribbled.candidates[0].image))
    base.invert_mask = True
    inverted = edit(image, Image.fromarray(mask), latent_models, base).candidates[0].image
    assert np.array_equal(np.asarray(inverted)[mask == 255], np.asarray(image)[mask == 255])


def test_a_bad_schedule_is_an_input_error(latent_models):
    from engine.errors import InputError

    image, mask = _scene()
    params = EditParams(prompt="x", timestep_respacing="10", skip_timesteps=10)
    with pytest.raises(InputError, match="skip_timesteps"):
        edit(image, Image.fromarray(mask), latent_models, params)


def test_admission_counts_every_loaded_network_of_a_latent_preset(latent_models):
    from engine.editing.admission import footprint

    networks = (latent_models.unet, latent_models.vae, latent_models.text_encoder)
    expected = sum(p.numel() * p.element_size() for m in networks for p in m.parameters())
    assert footprint(latent_models).weights == expected


def test_cancel_stops_a_latent_edit(latent_models):
    import threading

    from engine.errors import Cancelled

    image, mask = _scene()
    cancel = threading.Event()
    seen = []

    def on_progress(progress) -> None:
        seen.append(progress.step)
        cancel.set()  # after the first step's report

    params = EditParams(prompt="a red circle", timestep_respacing="10", skip_timesteps=0, batch_size=1)
    with pytest.raises(Cancelled):
        edit(image, Image.fromarray(mask), latent_models, params, progress=on_progress, cancel=cancel)
    assert seen == [1]
