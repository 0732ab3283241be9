"""``python -m engine edit``: reference option names and defaults, ranked output, bad input writes nothing."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import edit as cli_edit

ROOT = Path(__file__).resolve().parents[3]

# the authors' optimization/arguments.py defaults
REFERENCE_DEFAULTS = {
    "mask": None,
    "skip_timesteps": 25,
    "local_clip_guided_diffusion": False,
    "timestep_respacing": "100",
    "aug_num": 8,
    "clip_guidance_lambda": 1000,
    "range_lambda": 50,
    "lpips_sim_lambda": 1000,
    "l2_sim_lambda": 10000,
    "background_preservation_loss": False,
    "invert_mask": False,
    "enforce_background": True,
    "seed": 404,
    "output_path": "output",
    "iterations_num": 8,
    "batch_size": 4,
}


def _parser():
    parser = argparse.ArgumentParser()
    cli_edit.add_arguments(parser)
    return parser


def test_option_names_and_defaults_match_the_reference():
    args = _parser().parse_args(["-p", "a cat", "-i", "img.png"])
    for name, value in REFERENCE_DEFAULTS.items():
        assert getattr(args, name) == value, name
    assert args.prompt == "a cat" and args.init_image == "img.png" and args.ddim is False
    assert args.models == "default" and args.device is None and args.weights_dir is None
    flags = _parser().parse_args(
        "--prompt x --init_image i --mask m --ddim --invert_mask --no_enforce_background "
        "--local_clip_guided_diffusion --background_preservation_loss --models tiny --device cpu "
        "--weights-dir w --seed 3".split()
    )
    assert flags.ddim and flags.invert_mask and not flags.enforce_background
    assert flags.local_clip_guided_diffusion and flags.background_preservation_loss
    assert (flags.models, flags.device, flags.weights_dir, flags.seed) == ("tiny", "cpu", "w", 3)


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (27, 45, 3), dtype=np.uint8)).save(image)
    mask = np.zeros((27, 45), np.uint8)
    mask[5:20, 10:30] = 200
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    return image, mask_path, mask


def test_writes_ranked_pngs_and_scores(tiny_models, tiny_weights_dir, inputs, tmp_path, capsys):
    image, mask_path, mask = inputs
    out = tmp_path / "results"
    argv = (
        f"-p 'a red ball' -i {image} --mask {mask_path} --timestep_respacing 10 --skip_timesteps 7 "
        f"--aug_num 2 --batch_size 2 --iterations_num 2 --seed 50 --models tiny --device cpu "
        f"--weights-dir {tiny_weights_dir} --output_path {out} --no-progress"
    )
    import shlex

    assert cli_edit.run(_parser().parse_args(shlex.split(argv))) == 0
    names = sorted(os.listdir(out))
    pngs = [n for n in names if n.endswith(".png")]
    assert names == sorted(pngs + ["scores.json"]) and len(pngs) == 4
    summary = json.loads((out / "scores.json").read_text())
    assert [c["file"] for c in summary["candidates"]] == pngs  # name order is rank order
    assert [c["rank"] for c in summary["candidates"]] == [1, 2, 3, 4]
    assert sorted(c["seed"] for c in summary["candidates"]) == [50, 51, 52, 53]
    combined = [c["scores"]["combined"] for c in summary["candidates"]]
    assert combined == sorted(combined)
    source = np.asarray(Image.open(image))
    for name in pngs:
        result = np.asarray(Image.open(out / name))
        assert result.shape == source.shape
        assert np.array_equal(result[mask == 0], source[mask == 0])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".edit-")]  # staging folder gone
    # a second run into the same folder refuses instead of mixing results
    assert cli_edit.run(_parser().parse_args(shlex.split(argv))) == 2
    assert "already holds results" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == names


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found"),
        ("unreadable", "cannot read"),
        ("mask_size", "differs from the image size"),
        ("empty_mask", "mask is empty"),
        ("unknown_preset", "nosuchpreset"),
    ],
)
def test_bad_input_one_line_nonzero_exit_nothing_written(case, message, inputs, tmp_path, tiny_weights_dir):
    image, mask_path, _ = inputs
    out = tmp_path / "out"
    models = "tiny"
    if case == "missing":
        image = tmp_path / "nope.png"
    elif case == "unreadable":
        image = tmp_path / "broken.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    elif case == "mask_size":
        Image.new("L", (44, 27), 255).save(mask_path)
    elif case == "empty_mask":
        Image.new("L", (45, 27), 0).save(mask_path)
    elif case == "unknown_preset":
        models = "nosuchpreset"
    argv = [
        sys.executable, "-m", "engine", "edit", "-p", "x", "-i", str(image), "--mask", str(mask_path),
        "--models", models, "--device", "cpu", "--weights-dir", str(tiny_weights_dir),
        "--timestep_respacing", "10", "--skip_timesteps", "7", "--output_path", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".edit-")]


def test_impossible_settings_fail_after_loading_and_write_nothing(inputs, tmp_path, tiny_weights_dir, capsys):
    image, mask_path, _ = inputs
    out = tmp_path / "out"
    argv = [
        "-p", "x", "-i", str(image), "--mask", str(mask_path), "--models", "tiny", "--device", "cpu",
        "--weights-dir", str(tiny_weights_dir), "--timestep_respacing", "10", "--skip_timesteps", "10",
        "--output_path", str(out),
    ]  # fmt: skip
    assert cli_edit.run(_parser().parse_args(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skip_timesteps must be between 0 and 9" in err[0]
    assert not out.exists()


# --- a preset's recommended settings (edit_defaults): the toy preset, its 128 px example scene -------------

TOY_SCENE = ROOT / "resources" / "examples" / "toy_scene.png"
TOY_MASK = ROOT / "resources" / "examples" / "toy_scene_mask.png"


def _toy_edit(tmp_path, capsys, *options: str) -> tuple:
    """Run a toy edit with these options; (scores.json params, stderr lines)."""
    out = tmp_path / "toy-out"
    argv = ["-p", "a red circle", "-i", str(TOY_SCENE), "--mask", str(TOY_MASK), "--models", "toy",
            "--device", "cpu", "--output_path", str(out), "--no-progress", *options]  # fmt: skip
    assert cli_edit.run(_parser().parse_args(argv)) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return json.loads((out / "scores.json").read_text())["params"], lines


def test_toy_preset_defaults_fill_the_options_left_out(tmp_path, capsys):
    params, err = _toy_edit(tmp_path, capsys, "--batch_size", "1")
    assert params["timestep_respacing"] == "50" and params["skip_timesteps"] == 10
    assert params["clip_guidance_lambda"] == 70.0 and params["iterations_num"] == 1
    assert params["batch_size"] == 1  # given: the preset's 4 does not replace it
    assert params["lpips_sim_lambda"] == 1000 and params["seed"] == 404  # not in the preset: the reference's
    said = [line for line in err if line.startswith("preset 'toy' recommends:")]
    assert len(said) == 1, err
    assert "timestep_respacing=50" in said[0] and "clip_guidance_lambda=70" in said[0]
    assert "batch_size" not in said[0] and "--no_preset_defaults" in said[0]
    assert "range_lambda" not in said[0]  # the preset's 50 is the reference's: nothing to say


@pytest.mark.parametrize("option", ["--clip_guidance_lambda=1000", "--no_preset_defaults"])
def test_explicit_option_or_no_preset_defaults_keeps_the_reference_value(option, tmp_path, capsys):
    # an explicit option equal to the reference default still wins over the preset's 500
    quick = ["--timestep_respacing", "10", "--skip_timesteps", "8", "--batch_size", "1", "--aug_num", "2"]
    params, err = _toy_edit(tmp_path, capsys, option, *quick)
    assert params["clip_guidance_lambda"] == 1000.0
    assert params["timestep_respacing"] == "10" and params["skip_timesteps"] == 8 and params["aug_num"] == 2
    said = [line for line in err if "recommends" in line]
    if option == "--no_preset_defaults":
        assert params["iterations_num"] == 8 and not said, err  # the reference's, silently
    else:
        assert params["iterations_num"] == 1  # left out: the preset's
        assert len(said) == 1 and "iterations_num=1" in said[0] and "clip_guidance_lambda" not in said[0]


def test_explicit_options_are_recorded_through_the_subcommand_parser():
    parser = argparse.ArgumentParser()
    cli_edit.add_arguments(parser.add_subparsers(dest="command").add_parser("edit"))
    args = parser.parse_args(
        ["edit", "-p", "x", "-i", "y", "--seed", "404", "--ddim", "--no_enforce_background"]
    )
    assert args.explicit_options == {"seed", "ddim", "enforce_background"}
    assert not parser.parse_args(["edit", "-p", "x", "-i", "y"]).explicit_options
    # a Namespace built by hand: values that differ from the reference's count as given
    from engine.editing.shared.params import EditParams

    built = argparse.Namespace(**{**vars(args), "seed": 7, "skip_timesteps": 25})
    del built.explicit_options
    params, changed = cli_edit.apply_preset_defaults(
        EditParams(seed=7), built, {"seed": 1, "skip_timesteps": 5, "clip_guidance_lambda": 500}
    )
    assert (params.seed, params.skip_timesteps, params.clip_guidance_lambda) == (7, 5, 500.0)
    assert changed == {"skip_timesteps": 5, "clip_guidance_lambda": 500.0}
