"""Model registry, presets (built-in and folder), weights folder, device choice, the models CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from engine.cli import models as cli_models
from engine.errors import DeviceUnavailableError, EngineError, InputError, UnknownPresetError
from engine.models.devices import pick_device
from engine.models.registry import default_weights_dir, get_preset, list_presets, resolve_weights_dir


def test_builtin_presets_describe_the_published_models():
    assert {"default", "tiny", "adm512"} <= set(list_presets())
    default = get_preset("default")
    assert default.diffusion.file == "256x256_diffusion_uncond.pt"
    assert default.diffusion.sha256 == "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a"
    assert default.diffusion.urls[0].endswith("diffusion/jul-2021/256x256_diffusion_uncond.pt")
    assert default.diffusion.model_flags["num_head_channels"] == 64
    assert default.diffusion.diffusion_flags["rescale_timesteps"] is True
    assert default.clip.file == "ViT-B-16.pt"
    assert default.clip.sha256 in default.clip.urls[0]  # OpenAI's URL embeds the digest
    assert default.clip.config["vision_cfg"]["image_size"] == 224
    tiny = get_preset("tiny")
    assert tiny.diffusion.generated and tiny.clip.generated and not tiny.diffusion.urls
    adm512 = get_preset("adm512")
    assert adm512.diffusion.model_flags["class_cond"] is True and adm512.diffusion.trust_on_first_use


def test_real_presets_list_the_lpips_vgg16_backbone_as_an_optional_file():
    for name in ("default", "adm512"):
        preset = get_preset(name)
        lpips = preset.lpips
        assert lpips is not None and lpips.kind == "lpips_backbone" and lpips.config == {"net": "vgg"}
        assert lpips.file == "vgg16-397923af.pth" and lpips.size_bytes == 553_433_881
        assert lpips.urls == ["https://download.pytorch.org/models/vgg16-397923af.pth"]
        assert lpips.sha256.startswith(lpips.sha256_prefix) and lpips.sha256_prefix == "397923af"
        assert preset.models == [preset.diffusion, preset.clip, lpips]  # download fetches it too
        assert lpips not in preset.required_models
        assert "528 MB" in preset.description
    for name in ("tiny", "toy"):  # random LPIPS backbone, nothing to download
        assert get_preset(name).lpips is None and len(get_preset(name).models) == 2


def test_lpips_entry_and_sha256_prefix_are_checked(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    preset = {"diffusion": "tiny_adm", "clip": "tiny_clip", "lpips": "lpips_vgg16"}
    (folder / "preset.json").write_text(json.dumps(preset))
    assert get_preset(str(folder)).lpips.path() == folder.resolve() / "vgg16-397923af.pth"
    (folder / "preset.json").write_text(json.dumps({**preset, "lpips": "tiny_clip"}))
    with pytest.raises(InputError, match="not an lpips_backbone"):
        get_preset(str(folder))
    vgg = json.loads((Path(__file__).parents[3] / "engine/models/specs/lpips_vgg16.json").read_text())
    for bad, message in [
        ({**vgg, "sha256_prefix": "deadbeef"}, "does not start with"),
        ({**vgg, "sha256_prefix": "xyz"}, "hex digits"),
        ({**vgg, "config": {"net": "alex"}}, "only VGG16"),
    ]:
        (folder / "preset.json").write_text(json.dumps({**preset, "lpips": bad}))
        with pytest.raises(InputError, match=message):
            get_preset(str(folder))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UnknownPresetError) as info:
        get_preset("nonexistent")
    assert "default" in str(info.value) and "tiny" in str(info.value)
    assert isinstance(info.value, EngineError)


def test_folder_preset_with_inline_models_and_directory(tmp_path):
    folder = tmp_path / "my-models"
    folder.mkdir()
    tiny_adm = json.loads((Path(__file__).parents[3] / "engine/models/specs/tiny_adm.json").read_text())
    preset = {"description": "mine", "diffusion": tiny_adm, "clip": "tiny_clip"}
    (folder / "preset.json").write_text(json.dumps(preset))
    loaded = get_preset(str(folder))
    assert loaded.description == "mine"
    assert loaded.diffusion.path("/ignored") == folder.resolve() / "tiny_adm.pt"
    assert loaded.clip.path("/ignored") == folder.resolve() / "tiny_clip.pt"
    (folder / "preset.json").write_text(json.dumps({**preset, "directory": "files"}))
    assert get_preset(str(folder)).clip.path() == folder.resolve() / "files" / "tiny_clip.pt"
    # a wrong kind, a missing digest and broken JSON are clear input errors
    (folder / "preset.json").write_text(json.dumps({**preset, "clip": "tiny_adm"}))
    with pytest.raises(InputError, match="refers to a diffusion model"):
        get_preset(str(folder))
    (folder / "preset.json").write_text(json.dumps({**preset, "diffusion": {**tiny_adm, "generate": None}}))
    with pytest.raises(InputError, match="sha256"):
        get_preset(str(folder))
    (folder / "preset.json").write_text("{ not json")
    with pytest.raises(InputError, match="preset.json"):
        get_preset(str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownPresetError, match="no preset.json"):
        get_preset(str(empty))


def test_preset_edit_defaults_are_read_and_checked(tmp_path):
    toy = get_preset("toy")
    assert (
        toy.edit_defaults["timestep_respacing"] == "50" and toy.edit_defaults["clip_guidance_lambda"] == 70
    )
    assert get_preset("tiny").edit_defaults == {} and get_preset("default").edit_defaults == {}
    from toyworld.evaluate import preset_edit_defaults  # toyworld reads them through the registry

    toy_folder = Path(__file__).parents[3] / "resources" / "models" / "toy"
    assert preset_edit_defaults(str(toy_folder)) == preset_edit_defaults("toy") == toy.edit_defaults
    folder = tmp_path / "m"
    folder.mkdir()
    preset = {"diffusion": "tiny_adm", "clip": "tiny_clip"}
    (folder / "preset.json").write_text(json.dumps({**preset, "edit_defaults": {"skip_timesteps": 3}}))
    assert get_preset(str(folder)).edit_defaults == {"skip_timesteps": 3}
    for bad, message in [
        ({"skip_timestep": 3}, "'skip_timestep'"),  # a typo must not be ignored
        ({"prompt": "a cat"}, "'prompt'"),  # the prompt is always the user's
        ([["skip_timesteps", 3]], "must be an object"),
    ]:
        (folder / "preset.json").write_text(json.dumps({**preset, "edit_defaults": bad}))
        with pytest.raises(InputError) as info:
            # the registry checks the shape; the editing parameters' type checks the names where used
            preset_edit_defaults(str(folder))
        assert str(folder / "preset.json") in str(info.value) and message in str(info.value)


def test_weights_folder_default_env_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("BLENDED_DIFFUSION_WEIGHTS", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert default_weights_dir() == Path.home() / ".local/share/blended-diffusion/weights"
    monkeypatch.setenv("BLENDED_DIFFUSION_WEIGHTS", str(tmp_path / "env"))
    assert resolve_weights_dir() == tmp_path / "env"
    assert resolve_weights_dir(tmp_path / "flag") == tmp_path / "flag"
    assert get_preset("default").diffusion.path() == tmp_path / "env" / "256x256_diffusion_uncond.pt"


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device(None)
    assert auto.type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert auto.type != "cuda"
        with pytest.raises(DeviceUnavailableError, match="'cuda' is not available"):
            pick_device("cuda")
    else:
        with pytest.raises(DeviceUnavailableError, match="only"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(DeviceUnavailableError, match="Unknown device 'gpu0'"):
        pick_device("gpu0")


def _cli(name: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_models.add_arguments(parser, name)
    args = parser.parse_args(argv)
    args.command = name
    return args


def test_models_command_lists_presets_and_file_states(weights_dir, capsys):
    (weights_dir / "ViT-B-16.pt").write_bytes(b"definitely not CLIP")
    assert cli_models.run(_cli("models", ["--weights-dir", str(weights_dir)])) == 0
    out = capsys.readouterr().out
    assert f"weights folder: {weights_dir}" in out
    assert "default:" in out and "tiny:" in out
    assert "256x256_diffusion_uncond.pt: missing" in out
    assert "ViT-B-16.pt: CORRUPT" in out
    assert "not generated yet" in out
    assert "python -m engine download default" in out


def test_models_and_download_commands_include_the_optional_lpips_file(weights_dir, capsys, monkeypatch):
    assert cli_models.run(_cli("models", ["--weights-dir", str(weights_dir), "--quick"])) == 0
    out = capsys.readouterr().out
    assert out.count("vgg16-397923af.pth: missing [optional: Algorithm 1") == 2  # default and adm512
    from engine.models import weights

    def required_ok(preset, folder, hash_file=True):  # diffusion + CLIP present, the VGG16 file not
        states = ["ok"] * len(preset.required_models) + ["missing"] * len(preset.optional_models)
        return [weights.FileStatus(s, s.path(folder), st) for s, st in zip(preset.models, states)]

    monkeypatch.setattr(weights, "preset_status", required_ok)
    assert cli_models.run(_cli("models", ["--weights-dir", str(weights_dir)])) == 0
    out = capsys.readouterr().out
    assert "not ready" not in out and out.count("[ready]") == len(list_presets())
    fetched = []

    def fake_download(spec, folder, show_progress, timeout, preset_name):
        fetched.append((spec.file, preset_name))
        return folder / spec.file

    monkeypatch.setattr("engine.models.weights.download", fake_download)
    assert cli_models.run(_cli("download", ["default", "--weights-dir", str(weights_dir)])) == 0
    assert [f for f, _ in fetched] == ["256x256_diffusion_uncond.pt", "ViT-B-16.pt", "vgg16-397923af.pth"]
    assert "vgg16-397923af.pth (528 MB) is needed only by the Algorithm 1" in capsys.readouterr().out


def test_download_command_reports_errors_without_network(weights_dir, capsys):
    assert cli_models.run(_cli("download", ["nonexistent", "--weights-dir", str(weights_dir)])) == 1
    assert "Unknown models preset 'nonexistent'" in capsys.readouterr().err
