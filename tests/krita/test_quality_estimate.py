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
