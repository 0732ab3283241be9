"""The plugin's side of the job limits (bridge/limits.py): the engine's limits from its status reply, and the
extension checks that refuse, before the image is read, what the engine would refuse."""

import pytest
from blended_diffusion import errors, extending, params

from bridge.limits import DEFAULT_LIMITS, JobLimits


def test_every_job_the_docker_can_make_is_within_the_built_in_limits():
    assert params.MAX_CANDIDATES <= DEFAULT_LIMITS.max_candidates
    assert params.MAX_BATCH <= DEFAULT_LIMITS.max_batch_size
    assert extending.MAX_SIDE == DEFAULT_LIMITS.max_extend_side
    options = params.EditOptions(
        prompt="a red ball", candidates=params.MAX_CANDIDATES, steps=1000, aug_num=64
    )
    sent = params.engine_params(options)
    assert sent["batch_size"] * sent["iterations_num"] == params.MAX_CANDIDATES
    from bridge.limits import check_edit_params

    check_edit_params(sent)  # raises if the engine would refuse it


def test_a_grown_canvas_over_the_engines_pixel_limit_is_refused_before_sending():
    side = DEFAULT_LIMITS.max_extend_side
    assert extending.check_sides({"left": side}, image_size=(4000, 3000))["left"] == side
    with pytest.raises(extending.BadExtensionError, match=r"grown canvas of 20384x19384 .* over the limit"):
        extending.check_sides({"left": side, "top": side}, image_size=(4000, 3000))
    with pytest.raises(extending.BadExtensionError, match="grown canvas"):
        extending.make_request((4000, 3000), bytes(4000 * 3000 * 4), {}, {"left": side, "top": side})


def test_a_shared_engines_lower_limits_come_from_its_status():
    status = {"limits": {**DEFAULT_LIMITS.to_status(), "max_candidates": 8, "max_extend_side": 512}}
    limits = JobLimits.from_status(status["limits"])
    assert (limits.max_candidates, limits.max_extend_side) == (8, 512)
    with pytest.raises(extending.BadExtensionError, match="between 0 and 512 pixels, not 600"):
        extending.check_sides({"right": 600}, limits=limits)


def test_a_refusal_reads_as_one_line():
    message = "batch_size x iterations_num = 100 candidates is over the limit of 64 candidates per job"
    text = str(errors.EngineJobFailed("invalid_input", message))
    assert "\n" not in text and message in text


def test_a_prompt_over_the_engines_limit_is_not_sent():
    with pytest.raises(ValueError, match="the prompt has 5000 characters, over the limit of 1000"):
        params.engine_params(params.EditOptions(prompt="x" * 5000))
