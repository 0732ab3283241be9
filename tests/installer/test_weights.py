"""installer.weights: which presets' weights an install fetches, the files they are, and an offline install
that says what to fetch by hand and still ends with a first edit."""

from __future__ import annotations

import sys

from installer import weights
from installer.layout import Layout
from tests.installer.helpers import make_home, run_install, snapshot


def test_presets_to_download_add_the_chosen_builtin_preset():
    assert weights.presets_to_download("default") == ["default"]
    assert weights.presets_to_download("sd15") == ["default", "sd15"]
    assert weights.presets_to_download("no-such-preset") == ["default"]
    assert weights.presets_to_download("/srv/my-models") == ["default"]  # a folder is not downloaded


def test_default_weights_are_present_when_every_file_is(tmp_path):
    files = weights.preset_files("default")
    names = [spec["file"] for spec in files]
    assert "256x256_diffusion_uncond.pt" in names and all(len(spec["sha256"]) == 64 for spec in files)
    assert all(spec["urls"] for spec in files) and weights.preset_files("no-such-preset") == []
    folder = tmp_path / "weights"
    layout = Layout(
        resource_dir=tmp_path,
        kritarc=tmp_path / "kritarc",
        data_dir=tmp_path,
        config_path=tmp_path / "e.json",
        weights_dir=folder,
        venv_dir=tmp_path / "venv",
        engine_root=tmp_path / "engine",
    )
    assert not weights.default_weights_present(layout)
    folder.mkdir()
    for name in names[:-1]:
        (folder / name).write_bytes(b"")
    assert not weights.default_weights_present(layout)
    (folder / names[-1]).write_bytes(b"")
    assert weights.default_weights_present(layout)
    advice = weights.weights_help(layout, "py")
    assert f"Put these files in {folder}:" in advice and all(name in advice for name in names)
    assert f"cd {tmp_path / 'engine'} && py -m engine models" in advice


def test_offline_weights_then_first_edit_then_uninstall(clone, tmp_path):
    """No network: the download fails with a clear message, the install completes, the first edit runs on
    the stand-in models, and --uninstall still leaves HOME as it was (weights generated for it included)."""
    home = make_home(tmp_path)
    before = snapshot(home)
    quick = "--timestep_respacing 4 --skip_timesteps 2 --batch_size 1 --aug_num 1 --no-progress"
    args = ["--no-venv", "--python", sys.executable, "--yes", "--first-edit-args", quick]
    args += ["--models", "toy-latent"]  # the plugin's preset: downloaded (here: verified) besides the default
    closed = "http://127.0.0.1:9"  # nothing listens there: every download is refused at once
    offline = {"https_proxy": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "HTTP_PROXY": closed}
    result = run_install(clone, home, *args, env_extra=offline)
    assert result.returncode == 0, result.stdout + result.stderr
    weights_dir = home / ".local" / "share" / "blended-diffusion" / "weights"
    assert "could not be downloaded" in result.stdout
    assert (
        "weights (default, toy-latent)" in result.stdout and "preset 'toy-latent' is ready" in result.stdout
    )
    assert f"Put these files in {weights_dir}" in result.stdout
    assert "256x256_diffusion_uncond.pt" in result.stdout and "openaipublic" in result.stdout
    assert "because the default weights" in result.stdout and "absent" in result.stdout
    candidates = home / ".local" / "share" / "blended-diffusion" / "first-edit" / "candidates"
    pictures = sorted(candidates.glob("*.png"))
    assert pictures, result.stdout + result.stderr
    assert "first edit's candidates, made with the" in result.stdout and str(pictures[0]) in result.stdout
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert snapshot(home) == before
