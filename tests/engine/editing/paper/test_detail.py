"""The full-resolution detail stage (engine/editing/paper/detail.py): tiles, the auto decision, the stage
inside edit() (document resolution, background byte for byte, progress across both stages, the step timer,
cancel), and bad options refused in one line. Toy models (32 px) on a 128 px toy scene: a 96 px box."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.editing.editor import EditParams, edit
from engine.editing.paper import detail
from engine.editing.timing import StepTimer, StepTimes
from engine.errors import Cancelled, InputError
from toyworld.scenes import edit_case

ROOT = Path(__file__).resolve().parents[4]
QUICK = dict(timestep_respacing="10", skip_timesteps=5, aug_num=2, batch_size=2, iterations_num=1, seed=7)


@pytest.fixture(scope="module")
def toy_models():
    from engine.models.loading import load_models

    return load_models("toy", device="cpu")


@pytest.fixture(scope="module")
def scene():
    return edit_case(31, 128)


def _params(case, **overrides):
    return EditParams(**{"prompt": case.prompt, **QUICK, "clip_guidance_lambda": 70.0, **overrides})


def test_tiles_cover_the_box_with_overlap_and_skip_tiles_without_mask():
    for length in (32, 33, 96, 97, 1024, 2000):
        starts = detail.tile_starts(length, 32)
        assert starts[0] == 0 and starts[-1] == max(0, length - 32)
        gaps = np.diff(starts)
        assert (gaps <= 32 - 8).all() and (gaps > 0).all()  # overlap of at least a quarter, no repeats
    mask = np.zeros((96, 96), bool)
    mask[70:90, 70:90] = True
    tiles = detail.mask_tiles(mask, 32)
    assert tiles and all(mask[y : y + 32, x : x + 32].any() for x, y in tiles)
    assert len(tiles) < len(detail.tile_starts(96, 32)) ** 2
    weight = detail.tile_weight(32)
    assert weight.max() == 1.0 and weight.min() > 0 and weight[16, 16] == 1.0 and weight[0, 0] < 0.05


def test_auto_runs_the_stage_only_when_it_costs_less_than_the_first_pass(toy_models, scene):
    from engine.editing.shared.prepare import prepare_edit

    prepared = prepare_edit(scene.image, scene.mask, toy_models, _params(scene), None)
    auto = _params(scene, detail="auto")
    cheap = detail.plan_detail(auto, prepared, 2, first_pass_seconds=1000.0, seconds_per_tile_step=0.01)
    dear = detail.plan_detail(auto, prepared, 2, first_pass_seconds=0.5, seconds_per_tile_step=0.01)
    forced = detail.plan_detail(_params(scene, detail="on"), prepared, 2, 1.0, 0.01)
    assert "auto" in cheap.note and "of the first pass's time" in cheap.note
    assert cheap.on and cheap.work == cheap.steps * len(cheap.tiles) * 2 > 0
    assert not dear.on and dear.work == 0 and "--detail on" in dear.note
    assert forced.on
    assert cheap.steps == round(auto.detail_strength * 10)  # detail_strength x the respaced schedule
    assert not detail.plan_detail(_params(scene), prepared, 2, 1.0, 0.01).on  # off
    small = prepare_edit(scene.image.resize((36, 36)), scene.mask.resize((36, 36)), toy_models, auto, None)
    too_small = detail.plan_detail(_params(scene, detail="on"), small, 2, 1.0, 0.01)
    assert not too_small.on and "not needed" in too_small.note


def test_detail_at_document_resolution_keeps_the_background_and_counts_on(toy_models, scene, tmp_path):
    plain = edit(scene.image, scene.mask, toy_models, _params(scene))
    clock = iter(range(10**6))  # a fake clock: one "second" per reading
    timer = StepTimer(StepTimes(tmp_path / "times.json"), "key", clock=lambda: float(next(clock)))
    reports = []
    sharp = edit(scene.image, scene.mask, toy_models, _params(scene, detail="on"), progress=reports.append,
                 timer=timer)  # fmt: skip
    assert any(note.startswith("full-resolution detail: ") for note in sharp.notes), sharp.notes
    steps = [r.step for r in reports]
    assert steps == sorted(set(steps)) and steps[-1] == reports[-1].total  # monotonic, to the end
    assert len({r.total for r in reports}) == 1
    first_pass = 5 * 2
    assert reports[-1].total > first_pass and any(s > first_pass for s in steps)
    keep = np.asarray(scene.mask) == 0
    source = np.asarray(scene.image)
    assert [c.seed for c in sharp.candidates] == [c.seed for c in plain.candidates]  # same ranking
    for before, after in zip(plain.candidates, sharp.candidates):
        image = np.asarray(after.image)
        assert image.shape == source.shape and np.array_equal(image[keep], source[keep])
        assert after.box == before.box
        assert not np.array_equal(image, np.asarray(before.image))  # the stage changed the region
    saved = timer.save()
    assert saved["detail"] > 0 and StepTimes(tmp_path / "times.json").get("key")["detail"] == saved["detail"]


def test_cancel_during_the_detail_stage_then_the_engine_edits_again(toy_models, scene):
    cancel = threading.Event()
    first_pass = 5 * 2
    seen, totals = [], []

    def on_progress(report):
        seen.append(report.step)
        totals.append(report.total)
        if report.step > first_pass:
            cancel.set()  # inside the detail stage

    with pytest.raises(Cancelled):
        edit(scene.image, scene.mask, toy_models, _params(scene, detail="on"), progress=on_progress,
             cancel=cancel)  # fmt: skip
    assert first_pass < max(seen) < totals[-1]  # cancelled inside the detail stage, before its end
    again = edit(scene.image, scene.mask, toy_models, _params(scene, iterations_num=1, batch_size=1))
    assert len(again.candidates) == 1


@pytest.mark.parametrize(
    "option, message",
    [
        (["--detail_strength", "0"], "detail_strength must be above 0 and at most 1"),
        (["--detail_strength", "1.5"], "detail_strength must be above 0 and at most 1"),
        (["--detail", "maybe"], "detail must be one of auto, on, off"),
    ],
)
def test_bad_detail_options_one_line_exit_2_nothing_written(option, message, tmp_path, scene):
    image, mask, out = tmp_path / "scene.png", tmp_path / "mask.png", tmp_path / "out"
    scene.image.save(image)
    scene.mask.save(mask)
    argv = [sys.executable, "-m", "engine", "edit", "-p", "x", "-i", str(image), "--mask", str(mask),
            "--models", "toy", "--device", "cpu", "--output_path", str(out), *option]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["mask.png", "scene.png"]


def test_bad_detail_params_are_input_errors():
    from engine.editing.shared.params import validate_params

    for bad in (dict(detail="maybe"), dict(detail_strength=0.0), dict(detail_strength=float("nan"))):
        with pytest.raises(InputError):
            validate_params(EditParams(**bad))
    validate_params(EditParams(detail="auto", detail_strength=1.0))


def test_planned_seconds_before_the_edit_match_the_stage_plan(toy_models, scene):
    from engine.editing.shared.prepare import prepare_edit

    params = _params(scene, detail="on")
    prepared = prepare_edit(scene.image, scene.mask, toy_models, params, None)
    plan = detail.plan_detail(params, prepared, 2, None, None)
    soft = np.asarray(scene.mask)
    times = {"guided": 0.05, "unguided": 0.02, "detail": 0.01}
    assert detail.planned_seconds(params, soft, 32, times) == pytest.approx(plan.work * 0.01)
    assert detail.planned_seconds(_params(scene), soft, 32, times) == 0.0  # off
    dear = {"guided": 1e-6, "detail": 0.01}  # the stage would cost more than the first pass: auto skips it
    assert detail.planned_seconds(_params(scene, detail="auto"), soft, 32, dear) == 0.0
    assert detail.planned_seconds(params, soft, 32, {}) == 0.0  # nothing measured yet
