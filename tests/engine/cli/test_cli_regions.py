"""``python -m engine edit --region MASK.png:PROMPT`` (issue 39): parsing, refusals, a two-region run."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from engine.cli import edit as cli_edit
from engine.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_edit.add_arguments(parser)
    return parser


def test_region_options_repeat_and_default_to_none():
    args = _parser().parse_args(["-p", "sky", "-i", "i.png", "--region", "a.png:x", "--region", "b.png:y: z"])
    assert args.regions == ["a.png:x", "b.png:y: z"] and args.mask is None and args.prompt == "sky"
    assert _parser().parse_args(["-p", "sky", "-i", "i.png"]).regions is None


def test_parse_region_splits_at_the_first_colon_after_an_existing_file(tmp_path):
    mask = tmp_path / "m.png"
    mask.write_bytes(b"")
    assert cli_edit.parse_region(f"{mask}:a cat: sitting, 3:4") == (str(mask), "a cat: sitting, 3:4")
    assert cli_edit.parse_region(f"{mask}:") == (str(mask), "")  # an empty prompt: the background's
    # a ':' inside the path (a Windows drive, C:\m.png): the text before the earlier ':' is no file
    (tmp_path / "C").mkdir()  # a folder is not a file either
    drive = tmp_path / "C:m.png"
    drive.write_bytes(b"")
    assert cli_edit.parse_region(f"{tmp_path}/C:m.png:a dog") == (str(drive), "a dog")
    with pytest.raises(InputError, match="has no ':': give MASK.png:PROMPT"):
        cli_edit.parse_region(str(mask))
    with pytest.raises(InputError, match="no existing mask file before a ':'"):
        cli_edit.parse_region(f"{tmp_path}/nope.png:a cat")


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(1)
    image = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(image)
    first, second = np.zeros((30, 44), np.uint8), np.zeros((30, 44), np.uint8)
    first[4:20, 3:17] = 255
    second[10:26, 24:40] = 160
    paths = []
    for name, array in (("left.png", first), ("right.png", second)):
        Image.fromarray(array).save(tmp_path / name)
        paths.append(tmp_path / name)
    return image, paths, np.maximum(first, second)


def _argv(image, out, weights, *extra: str):
    return [
        "-p", "a lawn", "-i", str(image), "--timestep_respacing", "10", "--skip_timesteps", "7",
        "--aug_num", "2", "--batch_size", "2", "--iterations_num", "1", "--seed", "5", "--models", "tiny",
        "--device", "cpu", "--weights-dir", str(weights), "--output_path", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_two_regions_edit_only_their_union(tiny_models, tiny_weights_dir, scene, tmp_path, capsys):
    image, (left, right), union = scene
    out = tmp_path / "results"
    regions = ["--region", f"{left}:a red square", "--region", f"{right}:a ball: blue"]
    assert cli_edit.run(_parser().parse_args(_argv(image, out, tiny_weights_dir, *regions))) == 0
    pngs = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    assert len(pngs) == 2
    summary = json.loads((out / "scores.json").read_text())
    assert summary["prompt"] == "a lawn" and summary["mask"] is None
    assert summary["regions"] == [
        {"mask": str(left), "prompt": "a red square"},
        {"mask": str(right), "prompt": "a ball: blue"},
    ]
    source = np.asarray(Image.open(image))
    for name in pngs:
        result = np.asarray(Image.open(out / name))
        assert np.array_equal(result[union == 0], source[union == 0])  # byte for byte
        assert not np.array_equal(result[union > 0], source[union > 0])
    assert "wrote 2 candidates" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("both", "give --mask or --region, not both"),
        ("too_many", "--region: 9 regions is over the limit of 8 regions per job"),
        ("invert", "--invert_mask does not apply to --region"),
        ("no_file", "no existing mask file before a ':'"),
        ("size", "region 2: mask size"),
        ("empty", "region 1 ('a red square'): its mask is empty"),
        ("long_prompt", "the prompt of region 2 is"),
    ],
)
def test_bad_regions_are_one_error_line_and_nothing_written(
    case, message, tiny_weights_dir, scene, tmp_path, capsys
):
    image, (left, right), _union = scene
    out = tmp_path / "out"
    regions = ["--region", f"{left}:a red square", "--region", f"{right}:a ball"]
    if case == "both":
        regions += ["--mask", str(left)]
    elif case == "too_many":
        regions = [item for _ in range(9) for item in ("--region", f"{left}:x")]
    elif case == "invert":
        regions += ["--invert_mask"]
    elif case == "no_file":
        regions[1] = f"{tmp_path}/gone.png:a red square"
    elif case == "size":
        Image.new("L", (43, 30), 255).save(right)
    elif case == "empty":
        Image.new("L", (44, 30), 0).save(left)
    elif case == "long_prompt":
        regions[3] = f"{right}:" + "word " * 80
    status = cli_edit.run(_parser().parse_args(_argv(image, out, tiny_weights_dir, *regions)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == cli_edit.EXIT_BAD_INPUT
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not out.exists()
