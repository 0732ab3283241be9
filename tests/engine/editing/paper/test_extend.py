"""Text-guided extrapolation: window plan, soft masks, the engine job and ``python -m engine extend``."""

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import extend as cli_extend
from engine.editing.extend import ExtendSpec, extend, plan_windows, validate_spec, window_mask
from engine.editing.shared.params import EditParams
from engine.errors import Cancelled, InputError

ROOT = Path(__file__).resolve().parents[4]
QUICK = "--timestep_respacing 4 --skip_timesteps 2 --aug_num 1 --batch_size 2 --iterations_num 1 --seed 7"


def _covered(image_size, spec, window):
    """Every canvas pixel the plan's windows generate, counted; and the plan."""
    the_plan = plan_windows(image_size, spec, window)
    width, height = the_plan.canvas_size
    count = np.zeros((height, width), np.int32)
    for win in the_plan.windows:
        x, y, w, h = win.box
        nx, ny, nw, nh = win.new
        assert w <= window and h <= window
        assert x <= nx and y <= ny and nx + nw <= x + w and ny + nh <= y + h  # new pixels inside the window
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        count[ny : ny + nh, nx : nx + nw] += 1
    return the_plan, count


@pytest.mark.parametrize(
    "size, spec",
    [
        ((45, 27), ExtendSpec(left=7, right=13)),
        ((45, 27), ExtendSpec(left=5, right=9, top=3, bottom=11)),
        ((10, 6), ExtendSpec(right=20, bottom=5)),
        ((100, 70), ExtendSpec(left=71, top=33)),
    ],
)
def test_plan_covers_every_new_pixel_and_never_the_original(size, spec):
    the_plan, count = _covered(size, spec, 32)
    width, height = size
    left, top = the_plan.offset
    assert the_plan.canvas_size == (width + spec.left + spec.right, height + spec.top + spec.bottom)
    original = np.zeros_like(count, bool)
    original[top : top + height, left : left + width] = True
    assert (count[~original] >= 1).all()
    assert (count[original] == 0).all()


def test_windows_keep_at_least_half_known_pixels_where_the_image_allows():
    the_plan = plan_windows((64, 32), ExtendSpec(right=50), 32)
    for win in the_plan.windows:
        assert win.box[2] == 32 and win.new[2] <= 16
    assert [w.new[0] for w in the_plan.windows] == [64, 80, 96, 112]


def test_soft_mask_ramps_into_generated_pixels_but_not_the_original_without_a_band():
    unknown = np.zeros((8, 12), bool)
    unknown[:, 8:] = True
    original = np.zeros((8, 12), bool)
    original[:, :4] = True
    soft = window_mask(unknown, original, feather=3, blend_band=0)
    assert (soft[:, 8:] == 255).all()
    assert list(soft[0, 4:8]) == [0, 64, 128, 191]  # linear ramp over 3 generated pixels
    assert (soft[:, :4] == 0).all()
    banded = window_mask(unknown, np.ones((8, 12), bool) & ~unknown, feather=3, blend_band=2)
    assert list(banded[0, 5:8]) == [0, 85, 170]


@pytest.mark.parametrize(
    "spec, message",
    [
        (ExtendSpec(), "nothing to extend"),
        (ExtendSpec(left=-3, right=4), "left extension must be >= 0"),
        (ExtendSpec(right=4, side_prompts={"top": "sky"}), "prompt for the top side was given"),
        (ExtendSpec(right=4, blend_band=-1), "blend_band must be >= 0"),
        (ExtendSpec(right=4, window=3), "window must be 0"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(InputError, match=message):
        validate_spec(spec)


def _params(**values):
    base = dict(timestep_respacing="4", skip_timesteps=2, aug_num=1, batch_size=2, iterations_num=1, seed=3)
    return EditParams(**{**base, **values})


def test_two_prompts_original_byte_identical_ranked_progress_and_cancel(tiny_models):
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    spec = ExtendSpec(left=11, right=17, side_prompts={"left": "hell", "right": "heaven"})
    reports = []
    result = extend(source, spec, tiny_models, _params(prompt=""), progress=reports.append)
    assert result.canvas_size == (58, 20) and result.offset == (11, 0)
    assert [c.rank for c in result.candidates] == [1, 2]
    combined = [c.scores["combined"] for c in result.candidates]
    assert combined == sorted(combined) and "combined_left" in result.candidates[0].scores
    for candidate in result.candidates:
        pixels = np.asarray(candidate.image)
        assert candidate.image.mode == "RGBA"
        assert np.array_equal(pixels[:, 11:41], np.asarray(source))
        assert (pixels[:, :11, 3] == 255).all() and (pixels[:, 41:, 3] == 255).all()
        alpha = np.asarray(candidate.patch)[..., 3]
        assert (alpha[:, 11:41] == 0).all() and (alpha[:, :11] == 255).all()
    assert reports[-1].step == reports[-1].total == 2 * result.windows * 2  # steps x windows x candidates
    assert not np.array_equal(
        np.asarray(result.candidates[0].image)[:, :11], np.asarray(result.candidates[1].image)[:, :11]
    )

    class CancelAfterFirst:
        def __init__(self):
            self.calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > 2

    with pytest.raises(Cancelled):
        extend(source, spec, tiny_models, _params(prompt="x"), cancel=CancelAfterFirst())


def test_blend_band_may_change_only_the_band(tiny_models):
    source = Image.fromarray(np.full((16, 24, 3), 90, np.uint8))
    result = extend(source, ExtendSpec(right=10, blend_band=4), tiny_models, _params(prompt="a"))
    pixels = np.asarray(result.candidates[0].image)
    assert np.array_equal(pixels[:, :20], np.asarray(source)[:, :20])  # beyond the band: untouched
    alpha = np.asarray(result.candidates[0].patch)[..., 3]
    assert (alpha[:, :20] == 0).all() and (alpha[:, 20:24] > 0).all() and (alpha[:, 24:] == 255).all()


def _parser():
    parser = argparse.ArgumentParser()
    cli_extend.add_arguments(parser)
    return parser


def _run_cli(argv: str) -> int:
    return cli_extend.run(_parser().parse_args(shlex.split(argv)))


@pytest.mark.parametrize(
    "shape, sides, canvas, offset",
    [
        ((27, 45), "--left 7 --right 13", (65, 27), (7, 0)),  # sizes not multiples of anything
        ((27, 45), "--left 5 --right 9 --top 3 --bottom 11", (59, 41), (5, 3)),  # all four sides
        ((6, 10), "--right 20 --bottom 5", (30, 11), (0, 0)),  # smaller than the model's window
        ((12, 4000), "--right 300", (4300, 12), (0, 0)),  # 4000 px wide, extended by 300 px
    ],
)
def test_cli_writes_ranked_full_size_results(
    shape, sides, canvas, offset, tiny_models, tiny_weights_dir, tmp_path
):
    rng = np.random.default_rng(2)
    source = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    image = tmp_path / "image.png"
    Image.fromarray(source).save(image)
    out = tmp_path / "results"
    argv = (
        f"-i {image} -p 'a red ball' --prompt_right 'the sea' {sides} {QUICK} --models tiny --device cpu "
        f"--weights-dir {tiny_weights_dir} --output_path {out} --no-progress"
    )
    assert _run_cli(argv) == 0
    summary = json.loads((out / "scores.json").read_text())
    pngs = [c["file"] for c in summary["candidates"]]
    assert sorted(os.listdir(out)) == sorted(pngs + ["scores.json"]) and len(pngs) == 2
    assert pngs == sorted(pngs)  # name order is rank order
    assert summary["canvas_size"] == list(canvas) and summary["offset"] == list(offset)
    assert summary["side_prompts"]["right"] == "the sea"
    x, y = offset
    for name in pngs:
        result = np.asarray(Image.open(out / name))
        assert result.shape == (canvas[1], canvas[0], 3)
        assert np.array_equal(result[y : y + shape[0], x : x + shape[1]], source)


@pytest.mark.parametrize(
    "sides, message",
    [
        ("-p x", "nothing to extend"),
        ("-p x --right -4", "right extension must be >= 0"),
        ("-p x --right 4 --prompt_top sky", "a prompt for the top side was given but the top extension is 0"),
        ("--right 4 --left 3 --prompt_right sea", "no prompt for the left side"),
    ],
)
def test_cli_bad_input_one_line_nothing_written(sides, message, tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (9, 9)).save(image)
    out = tmp_path / "results"
    command = [sys.executable, "-m", "engine", "extend", "-i", str(image), *shlex.split(sides)]
    command += ["--models", "tiny", "--output_path", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert sorted(os.listdir(tmp_path)) == ["image.png"]
