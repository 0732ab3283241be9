"""Quality modes (issue 16): resolution against explicit options and a preset, the step plan, the time
estimate from stored step times, ``--quality`` on the command line, the removed levers refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bridge.limits import respaced_steps
from engine.editing import timing
from engine.editing.paper import modes
from engine.editing.shared.params import REMOVED_PARAMS, EditParams
from engine.errors import InputError

TOY_DEFAULTS = {"timestep_respacing": "25", "skip_timesteps": 5, "clip_guidance_lambda": 500, "aug_num": 8}


def test_paper_is_the_base_unchanged():
    assert modes.resolve_params("paper", {}) == EditParams()
    with_preset = modes.resolve_params("paper", {"seed": 3}, TOY_DEFAULTS)
    assert with_preset == EditParams(**{**TOY_DEFAULTS, "seed": 3})
    base = EditParams(timestep_respacing="50", aug_num=3)
    assert modes.apply_mode(base, "paper") == base


def test_modes_scale_the_reference_and_the_preset_settings():
    fast = modes.resolve_params("fast", {})
    assert (fast.timestep_respacing, fast.skip_timesteps) == ("30", 8)  # three tenths, same strength
    assert (fast.aug_num, fast.quality, fast.guidance_grad) == (8, "fast", "x0")
    assert fast.clip_guidance_lambda == 250  # a quarter of the base's (issue 23: measured on the toy)
    balanced = modes.resolve_params("balanced", {})
    assert (balanced.timestep_respacing, balanced.skip_timesteps, balanced.aug_num) == ("80", 20, 8)
    assert (balanced.guidance_grad, balanced.clip_guidance_lambda) == ("x0", 600)
    toy_fast = modes.resolve_params("fast", {}, TOY_DEFAULTS)
    assert (toy_fast.timestep_respacing, toy_fast.skip_timesteps) == ("8", 2)  # from the preset's 25/5
    assert toy_fast.clip_guidance_lambda == 125  # the preset's lambda, scaled by the mode
    explicit = modes.resolve_params("fast", {"clip_guidance_lambda": 300, "guidance_grad": "unet"})
    assert (explicit.clip_guidance_lambda, explicit.guidance_grad) == (300, "unet")  # explicit options win
    # fractions scale the strength's skip with the schedule; the respaced step count never drops below 4
    assert modes.scale_schedule("ddim100", 25, 0.1) == ("10", 2)
    assert modes.scale_schedule("8", 2, 0.25) == ("4", 1)
    assert modes.scale_schedule("10,20", 3, 0.5) == ("10,20", 3)  # sectioned: left as it is


def test_explicit_options_override_the_mode():
    fast = modes.resolve_params("fast", {"aug_num": 8, "guidance_grad": "unet"}, TOY_DEFAULTS)
    assert (fast.aug_num, fast.guidance_grad, fast.timestep_respacing) == (8, "unet", "8")
    # an explicit schedule stays; the skip still comes from the mode only if given neither
    kept = modes.resolve_params("fast", {"timestep_respacing": "40"}, TOY_DEFAULTS)
    assert (kept.timestep_respacing, kept.skip_timesteps) == ("40", 5)
    skip = modes.resolve_params("fast", {"skip_timesteps": 3})
    assert (skip.timestep_respacing, skip.skip_timesteps) == ("30", 3)
    with pytest.raises(InputError, match="quality must be one of"):
        modes.resolve_params("turbo", {})


def test_the_levers_no_mode_used_are_refused_by_name():
    """guidance_every, reuse_guidance, prune_factor, prune_at (issue 36): a request naming one is an
    InputError saying it was removed, not an option silently ignored."""
    assert set(REMOVED_PARAMS) == {"guidance_every", "reuse_guidance", "prune_factor", "prune_at"}
    for name in REMOVED_PARAMS:
        with pytest.raises(InputError, match=f"edit parameter '{name}' was removed"):
            EditParams.from_dict({"prompt": "a cat", name: 2})
    assert all(not hasattr(EditParams(), name) for name in REMOVED_PARAMS)


def test_plan_and_cost_in_unet_forward_equivalents():
    paper = modes.resolve_params("paper", {})
    plan = modes.step_plan(paper, 100)
    assert (plan.steps, plan.guided_steps, plan.unguided_steps) == (75, 75, 0)
    per_guided = 3 + 8 * modes.CLIP_VIEW_GUIDED
    assert modes.unet_equivalents(paper, 100) == pytest.approx(75 * per_guided)
    unguided = modes.step_plan(paper, 100, guided=False)  # no prompt: every step without gradient
    assert (unguided.guided_steps, unguided.unguided_steps) == (0, 75)
    assert modes.unet_equivalents(paper, 100, guided=False) == pytest.approx(75.0)


def test_estimate_comes_from_the_stored_step_times(tmp_path):
    store = timing.StepTimes(tmp_path / "times.json")
    key = "cpu:test|toy"
    params = modes.resolve_params("paper", {"batch_size": 2, "iterations_num": 3}, TOY_DEFAULTS)
    assert timing.estimate_seconds(params, store.get(key)) is None  # nothing measured yet
    assert timing.mode_estimates(store.get(key), TOY_DEFAULTS) == {m: None for m in modes.MODES}

    clock = iter([0.0, 1.0, 1.5, 2.5, 2.7, 3.9])
    timer = timing.StepTimer(store, key, clock=lambda: next(clock))
    timer.start()  # 0.0
    timer.step(True, 2)  # 1.0: the first step of a run is warm-up, not recorded
    timer.step(True, 2)  # 1.5: 0.25 s per candidate
    timer.step(False, 2)  # 2.5: 0.5
    timer.step(True, 2)  # 2.7: 0.1
    timer.step(True, 2)  # 3.9: 0.6
    assert timer.save() == {"guided": pytest.approx(0.25), "unguided": pytest.approx(0.5)}
    stored = json.loads((tmp_path / "times.json").read_text())
    assert stored[key] == {"guided": 0.25, "unguided": 0.5}

    times = store.get(key)
    # 20 guided steps per candidate, 6 candidates
    assert timing.estimate_seconds(params, times) == pytest.approx(20 * 0.25 * 6)
    fast = modes.resolve_params("fast", {"batch_size": 1, "iterations_num": 1}, TOY_DEFAULTS)
    plan = modes.step_plan(fast, respaced_steps(fast.timestep_respacing))
    # fast guides on x0: before such a step was measured, the cost model's share of a guided one stands in
    expected = plan.guided_steps * 0.25 * timing.X0_SHARE + plan.unguided_steps * 0.5
    assert timing.mode_estimates(times, TOY_DEFAULTS)["fast"] == pytest.approx(expected)
    assert timing.describe_seconds(360) == "about 6 min"


def test_a_timed_edit_stores_the_time_outside_its_steps_from_a_fake_clock(tmp_path):
    store = timing.StepTimes(tmp_path / "times.json")
    clock = iter([10.0, 12.0, 13.0, 13.5, 14.0, 14.6, 15.0, 16.2, 16.8, 17.3, 17.8, 20.0, 29.0])
    timer = timing.StepTimer(store, "cpu:test|toy", clock=lambda: next(clock))
    timer.begin()  # 10.0
    timer.begin()  # a second begin (the editor's, after the caller's) keeps the first: no clock read
    timer.start()  # 12.0: 2 s before the first run (text encoding, ...): the edit part
    for _ in range(4):  # 13.0 (warm-up: 0.5 s per candidate), 13.5, 14.0, 14.6
        timer.step(True, 2)
    timer.start()  # 15.0: the gap between the runs is the run part's too
    for _ in range(4):  # 16.2 (warm-up), 16.8, 17.3, 17.8
        timer.step(True, 2)
    timer.end_steps(4)  # 20.0: 4 kept candidates (the second run's last step ran 2.2 s: a slow one)
    saved = timer.save()  # 29.0: ranking, compositing and encoding, 9 s for 4 candidates
    # medians of 0.25, 0.25, 0.3, 0.3, 0.25, 0.25 per candidate; 16 candidate-steps counted, first ones too
    assert saved["guided"] == pytest.approx(0.25)
    assert saved["edit"] == pytest.approx(2.0)
    assert saved["run"] == pytest.approx((20.0 - 12.0 - 16 * 0.25) / 2)
    assert saved["candidate"] == pytest.approx(9.0 / 4)
    assert store.get("cpu:test|toy") == pytest.approx(saved, abs=1e-6)  # stored rounded to a microsecond

    params = modes.resolve_params("paper", {"batch_size": 2, "iterations_num": 3}, TOY_DEFAULTS)
    steps = 20 * 0.25 + 2.25  # per candidate: 20 guided steps, then its ranking/compositing/encoding
    assert timing.estimate_seconds(params, saved) == pytest.approx(steps * 6 + 2.0 + 2.0 * 3)
    assert timing.mode_estimates(saved, TOY_DEFAULTS)["paper"] == pytest.approx(steps)
    assert timing.edit_seconds(saved, runs=3) == pytest.approx(2.0 + 2.0 * 3)


def test_a_step_times_file_without_the_fixed_parts_still_gives_the_steps_estimate(tmp_path):
    path = tmp_path / "step_times.json"
    path.write_text(json.dumps({"cpu:test|toy": {"guided": 0.25, "unguided": 0.1}, "broken": 3}))
    store = timing.StepTimes(path)
    times = store.get("cpu:test|toy")
    assert times == {"guided": 0.25, "unguided": 0.1}
    assert store.get("broken") == {}
    params = modes.resolve_params("paper", {"batch_size": 2, "iterations_num": 3}, TOY_DEFAULTS)
    assert timing.estimate_seconds(params, times) == pytest.approx(20 * 0.25 * 6)  # as before
    store.put("cpu:test|toy", {"edit": 1.5, "run": 0.0, "candidate": 0.5})  # added beside the old fields
    assert json.loads(path.read_text())["cpu:test|toy"] == {
        "guided": 0.25,
        "unguided": 0.1,
        "edit": 1.5,
        "run": 0.0,
        "candidate": 0.5,
    }
    assert timing.estimate_seconds(params, store.get("cpu:test|toy")) == pytest.approx(
        (20 * 0.25 + 0.5) * 6 + 1.5
    )


def test_an_edit_marks_its_runs_and_its_candidates_for_the_timer(tiny_models, tmp_path):
    from engine.editing import editor

    image, mask = _square_case()
    store = timing.StepTimes(tmp_path / "times.json")
    timer = timing.StepTimer(store, "cpu:test|tiny")
    params = EditParams(prompt="a cat", timestep_respacing="6", skip_timesteps=2, aug_num=2, batch_size=1,
                        iterations_num=2)  # fmt: skip
    editor.edit(image, mask, tiny_models, params, timer=timer)
    assert (timer.runs, timer.candidates) == (2, 2)  # 2 runs of 1 candidate
    # all steps, the first of each run too: the ones the estimate counts
    plan = modes.step_plan(params, respaced_steps(params.timestep_respacing))
    assert timer.counted == {"guided": plan.candidate_steps(True) * 2, "unguided": 0, "guided_x0": 0}
    saved = timer.save()
    assert set(saved) == {"guided", "edit", "run", "candidate"} and min(saved.values()) >= 0
    assert store.get("cpu:test|tiny") == pytest.approx(saved, abs=1e-6)  # stored rounded to a microsecond


def _square_case(size: int = 32):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), np.uint8)
    mask[8:24, 8:24] = 255
    return image, Image.fromarray(mask)


def test_cli_quality_fast_on_the_toy_preset(tmp_path, capsys):
    from tests.engine.cli.test_cli_edit import _toy_edit

    params, err = _toy_edit(tmp_path, capsys, "--quality", "fast", "--batch_size", "1", "--aug_num", "3")
    assert params["quality"] == "fast"
    assert (params["timestep_respacing"], params["skip_timesteps"]) == ("15", 3)  # preset 50 / 10 scaled
    assert params["guidance_grad"] == "x0" and params["aug_num"] == 3  # the explicit option wins
    assert any(line.startswith("quality fast:") and "measuring its speed" in line for line in err), err
