"""The docker's quality modes and time estimate (issue 16): what the plugin sends and shows (no Krita)."""

import pytest
from blended_diffusion import params
from blended_diffusion.estimate import Estimates, Remaining, describe_seconds


def test_paper_requests_are_unchanged_and_other_modes_leave_the_default_levers_to_the_engine():
    paper = params.engine_params(params.EditOptions(seed=1))
    assert "quality" not in paper and paper["timestep_respacing"] == "100" and paper["skip_timesteps"] == 25
    fast = params.engine_params(params.EditOptions(seed=1, quality="fast"))
    assert fast["quality"] == "fast"
    assert not {"timestep_respacing", "skip_timesteps", "aug_num", "ddim"} & set(fast)
    # what the user changed is sent, so it wins over the mode
    chosen = params.engine_params(params.EditOptions(seed=1, quality="balanced", strength=0.5, aug_num=3))
    assert (chosen["timestep_respacing"], chosen["skip_timesteps"], chosen["aug_num"]) == ("100", 50, 3)
    with pytest.raises(ValueError, match="quality"):
        params.engine_params(params.EditOptions(quality="turbo"))


def test_estimate_text_from_the_engine_reply():
    estimates = Estimates()
    assert "first edit" in estimates.text("fast", 4)
    estimates.update(
        {"estimates": {"paper": 90.0, "balanced": 30.0, "fast": None}, "step_times": {"guided": 1.5}}, "cpu"
    )
    assert estimates.seconds("balanced", 4) == 120.0
    assert estimates.text("balanced", 4) == "Time: about 2 min on this CPU"
    assert estimates.seconds("paper", 2, guided_steps=75) == pytest.approx(225.0)  # the docker's schedule
    assert "not measured" in estimates.text("fast", 4)
    assert describe_seconds(5400) == "about 1.5 h"


def test_estimate_adds_the_engine_s_time_outside_the_steps():
    estimates = Estimates()
    estimates.update(
        {
            "estimates": {"paper": 10.5, "balanced": 6.5, "fast": 2.5},  # per candidate, its own part in
            "step_times": {"guided": 0.5, "unguided": 0.2, "edit": 3.0, "run": 1.0, "candidate": 0.5},
        },
        "cpu",
    )
    assert estimates.seconds("fast", 4) == pytest.approx(2.5 * 4 + 3.0 + 1.0)  # 4 candidates: one batch
    assert estimates.seconds("fast", 8) == pytest.approx(2.5 * 8 + 3.0 + 1.0 * 2)  # two batches of 4
    # paper with the docker's schedule: its guided steps, each candidate's own part, the edit's
    assert estimates.seconds("paper", 2, guided_steps=20) == pytest.approx((0.5 * 20 + 0.5) * 2 + 3.0 + 1.0)


def test_remaining_time_from_the_rate_so_far():
    now = iter([100.0, 110.0, 130.0])
    remaining = Remaining(clock=lambda: next(now))
    assert remaining.text(1, 21) == ""  # the first report starts the clock
    assert remaining.text(2, 21) == "about 3 min left"  # 10 s a step, 19 to go
    assert remaining.text(21, 21) == ""


# (document width, height, selection bounds, model size): big and small, at an edge, thin, below MIN_SCALE
DETAIL_CASES = [
    (1024, 768, (212, 134, 812, 634), 32),
    (1024, 768, (0, 0, 300, 200), 256),
    (3000, 2000, (700, 300, 2200, 1500), 256),
    (4000, 3000, (3000, 100, 3980, 2900), 256),
    (800, 600, (390, 20, 430, 580), 32),
    (800, 600, (300, 200, 400, 300), 256),
]


@pytest.mark.parametrize("width, height, bounds, size", DETAIL_CASES)
def test_docker_counts_the_detail_tiles_the_engine_plans(width, height, bounds, size):
    """The docker's count of the detail stage's tiles (for its estimate) is the engine's plan for the region
    the plugin sends: equal for a rectangular selection, an upper bound for any other shape."""
    import numpy as np
    from blended_diffusion.estimate import detail_tiles

    from bridge.geometry import context_box
    from engine.editing.paper import detail
    from engine.editing.shared.params import EditParams

    params = EditParams(prompt="x", timestep_respacing="100", batch_size=1, iterations_num=1, detail="on")
    steps = round(params.detail_strength * 100)  # of the 100 respaced steps
    rx, ry, rw, rh = context_box(bounds, width, height)  # what the plugin sends (editing.plan_region)
    left, top, right, bottom = bounds[0] - rx, bounds[1] - ry, bounds[2] - rx, bounds[3] - ry
    rectangle = np.zeros((rh, rw), np.uint8)
    rectangle[top:bottom, left:right] = 255
    plugin = detail_tiles(bounds, width, height, size)
    assert detail.planned_work(params, rectangle, size).tile_steps == plugin * steps
    yy, xx = np.mgrid[:rh, :rw]
    cx, cy, rx2, ry2 = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
    disc = ((((xx - cx) / rx2) ** 2 + ((yy - cy) / ry2) ** 2) <= 1).astype(np.uint8) * 255
    assert detail.planned_work(params, disc, size).tile_steps <= plugin * steps
    if (right - left, bottom - top) == (100, 100) and size == 256:
        assert plugin == 0  # the engine's box is the model's size: no stage


def test_estimate_shows_the_detail_stage_s_added_time():
    estimates = Estimates()
    estimates.update(
        {
            "estimates": {"paper": 60.0, "balanced": 30.0, "fast": 10.0},
            "step_times": {"guided": 0.5, "unguided": 0.2},
            "models": {"image_size": 256, "edit_defaults": {"detail_strength": 0.15}},
        },
        "cpu",
    )
    selection = ((700, 300, 2200, 1500), 3000, 2000)
    from blended_diffusion.estimate import detail_tiles

    tiles = detail_tiles(*selection, 256)
    assert tiles > 4
    plain = estimates.text("fast", 2)
    assert estimates.text("fast", 2, detail="off", selection=selection) == plain
    # before the stage was measured a tile-step counts as an unguided step: 15 of 100 steps
    on = estimates.text("fast", 2, detail="on", selection=selection, steps=100)
    added = 0.2 * tiles * 15 * 2
    assert on == f"{plain} + {describe_seconds(added)} for full-resolution detail"
    estimates.update({"step_times": {"guided": 0.5, "unguided": 0.2, "detail": 0.01}})
    assert estimates.detail_seconds(tiles, 100, 2) == pytest.approx(0.01 * tiles * 15 * 2)
    cheap = estimates.text("paper", 2, detail="auto", selection=selection, steps=100)
    assert cheap.endswith(f" + {describe_seconds(0.01 * tiles * 30)} for full-resolution detail")
    estimates.update({"step_times": {"guided": 0.5, "unguided": 0.2, "detail": 1.0}})
    dear = estimates.text("fast", 2, detail="auto", selection=selection, steps=100)
    assert dear.endswith(
        f"; auto: full-resolution detail would add {describe_seconds(tiles * 30)}, more than the first pass: "
        "it will be skipped"
    )
    small = ((300, 200, 400, 300), 800, 600)
    assert estimates.text("fast", 2, detail="on", selection=small).endswith("not needed for this selection")


@pytest.mark.parametrize("quality", ["paper", "balanced", "fast"])
def test_detail_estimate_counts_the_mode_s_own_schedule(quality):
    """In balanced and fast the engine sets the schedule (the docker sends no steps): the status's
    ``schedules`` give the docker the stage's step count the engine plans for that mode's job."""
    import numpy as np
    from blended_diffusion.estimate import detail_tiles

    from bridge.geometry import context_box
    from engine.editing.paper import detail
    from engine.editing.paper.modes import resolve_params
    from engine.editing.timing import mode_schedules

    defaults = {"timestep_respacing": "100", "skip_timesteps": 25}  # the reference's, a real preset's
    estimates = Estimates()
    estimates.update(
        {
            "estimates": {"paper": 60.0, "balanced": 30.0, "fast": 10.0},
            "step_times": {"guided": 0.5, "unguided": 0.2, "detail": 0.01},
            "schedules": mode_schedules(defaults),
            "models": {"image_size": 256},
        },
        "cpu",
    )
    bounds, width, height = (700, 300, 2200, 1500), 3000, 2000
    tiles = detail_tiles(bounds, width, height, 256)
    # the job the plugin sends in this mode (paper: its own 100 steps), as the engine resolves it
    sent = {"detail": "on", "batch_size": 1, "iterations_num": 1}
    if quality == "paper":
        sent.update(timestep_respacing="100", skip_timesteps=25)
    job = resolve_params(quality, sent, defaults)
    rx, ry, rw, rh = context_box(bounds, width, height)
    region = np.zeros((rh, rw), np.uint8)
    region[bounds[1] - ry : bounds[3] - ry, bounds[0] - rx : bounds[2] - rx] = 255
    planned = detail.planned_work(job, region, 256).tile_steps
    options = params.EditOptions(prompt="x", quality=quality, detail="on")
    assert params.mode_sets_schedule(options) == (quality != "paper")
    text = estimates.text(
        quality, 1, detail="on", selection=(bounds, width, height), steps=100,
        mode_schedule=params.mode_sets_schedule(options),
    )  # fmt: skip
    assert text.endswith(f" + {describe_seconds(0.01 * planned)} for full-resolution detail")
    assert planned == tiles * round(0.15 * mode_schedules(defaults)[quality])
    # steps the user chose are sent and win over the mode's: the docker counts them
    chosen = params.EditOptions(prompt="x", quality=quality, detail="on", steps=60)
    sent = params.engine_params(chosen)
    assert not params.mode_sets_schedule(chosen) and sent["timestep_respacing"] == "60"
    job = resolve_params(quality, {**sent, "batch_size": 1, "iterations_num": 1}, defaults)
    planned = detail.planned_work(job, region, 256).tile_steps
    text = estimates.text(quality, 1, detail="on", selection=(bounds, width, height), steps=60)
    assert text.endswith(f" + {describe_seconds(0.01 * planned)} for full-resolution detail")
    assert planned == tiles * round(0.15 * 60)


def test_detail_estimate_for_a_latent_engine_is_the_latent_stage_s_plan():
    """A latent preset's engine (toy-latent: 32 px, 50 DDIM steps) reports its model size and step times as
    the paper's does; the docker's added time for the detail stage is the latent stage's planned tile-steps
    (engine/editing/latent/detail.py plans with shared/detail_plan.py) at the measured rate."""
    import numpy as np

    from bridge.geometry import context_box
    from engine.editing.paper import detail
    from engine.editing.paper.modes import resolve_params
    from engine.editing.timing import mode_schedules

    defaults = {"timestep_respacing": "50", "skip_timesteps": 0}  # toy-latent's edit_defaults
    estimates = Estimates()
    estimates.update(
        {
            "estimates": {"paper": 2.0},
            "step_times": {"guided": 0.02, "unguided": 0.01, "detail": 0.004},
            "schedules": mode_schedules(defaults),
            "models": {"image_size": 32, "method": "latent", "edit_defaults": {"detail_strength": 0.15}},
        },
        "cpu",
    )
    bounds, width, height = (300, 200, 420, 300), 800, 600
    options = params.EditOptions(prompt="x", quality="paper", detail="on", steps=50)
    sent = {**params.engine_params(options), "batch_size": 2, "iterations_num": 1}
    job = resolve_params("paper", sent, defaults)
    rx, ry, rw, rh = context_box(bounds, width, height)
    region = np.zeros((rh, rw), np.uint8)
    region[bounds[1] - ry : bounds[3] - ry, bounds[0] - rx : bounds[2] - rx] = 255
    planned = detail.planned_work(job, region, 32).tile_steps
    assert planned > 0
    text = estimates.text("paper", 2, detail="on", selection=(bounds, width, height), steps=50)
    assert text.endswith(f" + {describe_seconds(0.004 * planned)} for full-resolution detail")


def test_a_few_step_presets_floor_counts_in_the_estimate():
    estimates = Estimates()
    reply = {
        "step_times": {"guided": 0.5, "edit": 3.0, "run": 1.0, "candidate": 0.5},
        "models": {"min_steps": 4},
    }
    estimates.update(reply, "cpu")
    assert estimates.min_steps == 4
    # strength 0.5 of 4 steps asks for 2: the engine runs 4 of 8 (engine/editing/latent/edit.py's schedule)
    assert estimates.seconds("paper", 1, guided_steps=2) == pytest.approx(0.5 * 4 + 0.5 + 3.0 + 1.0)
    assert estimates.seconds("paper", 1, guided_steps=6) == pytest.approx(0.5 * 6 + 0.5 + 3.0 + 1.0)
    estimates.update({"models": {"image_size": 32}}, "cpu")  # a preset without a floor
    assert estimates.min_steps == 0
