"""Job limits (bridge/limits.py, engine/editing/shared/limits.py) and admission by estimate
(engine/editing/admission.py), without a server: the CLI's refusals, the window count, the estimate."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bridge.limits import DEFAULT_LIMITS, JobLimits, LimitError, check_edit_params, check_extension
from engine.cli import edit as cli_edit
from engine.cli import extend as cli_extend
from engine.editing import admission
from engine.editing.extend import ExtendSpec, plan_windows
from engine.editing.shared.limits import check_extend, check_prompt_tokens, count_windows
from engine.editing.shared.params import EditParams
from engine.editing.timing import describe_seconds
from engine.errors import InputError

SIDES = ("left", "right", "top", "bottom")

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def image_and_mask(tmp_path: Path):
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    Image.new("RGB", (40, 30), (90, 140, 200)).save(image)
    Image.new("L", (40, 30), 255).save(mask)
    return image, mask


# The issue's absurd jobs, as command lines: each refused before the models load, one line naming the
# option and its limit, exit 2, nothing written.
CLI_CASES = [
    ("edit", "--batch_size 1000000000", "batch_size 1000000000 is over the limit of 16"),
    ("edit", "--aug_num 1000000", "aug_num 1000000 is over the limit of 128"),
    ("edit", "--iterations_num 1000000", "= 4000000 candidates is over the limit of 64"),
    (
        "edit",
        "--timestep_respacing 100000",
        "timestep_respacing '100000' (100000 steps) is over the limit of 1000",
    ),
    ("edit", "-p " + "a" * 2000, "has 2000 characters, over the limit of 1000"),
    ("edit", "-p '" + "red ball " * 60 + "'", "tokens long and CLIP reads only 75"),
    ("extend", "--left 1000000", "left 1000000 px is over the limit of 16384 px"),
    ("extend", "--left 16000 --right 16000 --top 16000", "Mpx is over the limit of 268.4 Mpx"),
    ("extend", "--left 16000 --top 16000 --window 8", "diffusion windows, over the limit of 16384"),
    ("extend", "--right 100 --blend_band 100000", "blend_band 100000 px is over the limit of 1024 px"),
]


@pytest.mark.parametrize("command, options, message", CLI_CASES)
def test_cli_refuses_each_too_large_option_in_one_line(
    command, options, message, image_and_mask, tmp_path, capsys
):
    image, mask = image_and_mask
    out = tmp_path / "out"
    module = cli_edit if command == "edit" else cli_extend
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    base = f"-i {image} --models tiny --device cpu --output_path {out} --no-progress"
    base += f" --mask {mask}" if command == "edit" else ""
    prompt = "" if " -p " in f" {options}" else "-p x "
    args = parser.parse_args(shlex.split(f"{prompt}{base} {options}"))
    assert module.run(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["image.png", "mask.png"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    window=st.sampled_from([8, 9, 16, 31, 32, 64, 256]),
    sides=st.fixed_dictionaries({side: st.sampled_from([0, 0, 1, 7, 100, 333, 1000]) for side in SIDES}),
)
def test_window_count_is_the_plans_without_making_it(width, height, window, sides):
    if not any(sides.values()):
        sides["left"] = 1
    assert count_windows((width, height), sides, window) == len(
        plan_windows((width, height), ExtendSpec(**sides), window).windows
    )


def test_window_count_of_the_issues_extensions_is_arithmetic():
    # 40 px extended by 1,000,000 px on the left: 7812 windows of 256 px, counted without a list of them
    assert count_windows((40, 40), {"left": 1_000_000}, 256) == 7812
    with pytest.raises(InputError, match="left 1000000 px is over the limit of 16384 px"):
        check_extend((40, 40), {"left": 1_000_000}, 256)
    every = {side: 60000 for side in SIDES}
    with pytest.raises(InputError, match="left 60000 px"):
        check_extend((40, 40), every, 256)
    # within every side's limit, a canvas over the pixel limit is refused before its windows are counted
    with pytest.raises(InputError, match="canvas of 16424x16424"):
        check_extend((40, 40), {"left": 16384, "top": 16384}, 256)
    assert check_extend((40, 40), {"left": 512}, 256) == 4


def test_edit_limits_name_the_parameter_and_its_limit():
    for values, param, limit in [
        ({"batch_size": 17}, "batch_size", 16),
        ({"batch_size": 16, "iterations_num": 5}, "iterations_num", 64),
        ({"aug_num": 129}, "aug_num", 128),
        ({"timestep_respacing": "1," * 150}, "timestep_respacing", 200),
        ({"timestep_respacing": "ddim1001"}, "timestep_respacing", 1000),
        ({"prompt": "x" * 1001}, "prompt", 1000),
    ]:
        with pytest.raises(LimitError) as caught:
            check_edit_params(values)
        assert (caught.value.param, caught.value.limit) == (param, limit) and str(limit) in str(caught.value)
    # every job the docker can make passes: 16 candidates (4 x 4), 1000 steps, 64 augmentations
    check_edit_params({"batch_size": 4, "iterations_num": 4, "timestep_respacing": "1000", "aug_num": 64})
    check_extension({side: 16384 for side in ("left", "right")}, (100, 100))
    check_extension({}, (10000, 10000))  # a 100 Mpx photograph is a normal document


def test_served_limits_may_only_be_lowered_and_travel_in_status():
    lowered = DEFAULT_LIMITS.lowered(max_candidates=8, max_job_seconds=60.0, max_image_pixels=None)
    assert (lowered.max_candidates, lowered.max_job_seconds) == (8, 60.0)
    assert lowered.max_image_pixels == DEFAULT_LIMITS.max_image_pixels
    with pytest.raises(ValueError, match="max_candidates must be between 1 and 64, not 65"):
        DEFAULT_LIMITS.lowered(max_candidates=65)
    with pytest.raises(ValueError, match="max_candidates"):
        DEFAULT_LIMITS.lowered(max_candidates=0)
    assert JobLimits.from_status({**lowered.to_status(), "from_a_newer_engine": 1}) == lowered
    assert JobLimits.from_status(None) == DEFAULT_LIMITS


def test_prompt_longer_than_clip_reads_is_refused_not_cut():
    check_prompt_tokens("a red ball on a green lawn")
    with pytest.raises(InputError, match=r"the left prompt is \d+ tokens long and CLIP reads only 75"):
        check_prompt_tokens("a red ball " * 30, "left prompt")
    with pytest.raises(InputError, match="1000"):
        check_prompt_tokens("x" * 10**6)


def test_admission_refuses_with_figures_and_splits_a_batch_that_fits_only_smaller(tiny_models):
    fp = admission.footprint(tiny_models)
    assert fp.weights > 0 and fp.unet_activations > 0 and fp.clip_view_activations > 0
    params = EditParams(prompt="a red ball", batch_size=4, iterations_num=3, aug_num=8, precision="fp32")
    one = admission.candidate_bytes(fp, 8, True)
    step = admission.STEP_OVERHEAD
    # room for two candidates at once: the batch shrinks to a divisor of the 12 candidates
    ok = admission.admit(tiny_models, params, 64 * 64, free=(int(step + 2.5 * one), "the GPU"))
    assert ok.batch_size == 2
    smaller = admission.split_batch(params, ok.batch_size)
    assert (smaller.batch_size, smaller.iterations_num) == (2, 6)
    with pytest.raises(admission.AdmissionError, match=r"needs about .* the GPU has .* free"):
        admission.admit(tiny_models, params, 64 * 64, free=(int(step + 0.5 * one), "the GPU"))
    # on the host the images count too: a 100 Mpx photograph needs its 1.6 GB
    with pytest.raises(admission.AdmissionError, match=r"GB for the images\), this machine has 1.0 GB free"):
        admission.admit(tiny_models, params, 100_000_000, free=(10**9, "this machine"))
    # over the time cap by the measured speed
    with pytest.raises(admission.AdmissionError, match="over its limit of about 10 min per job"):
        admission.admit(tiny_models, params, 4096, seconds=700.0, max_seconds=600.0, free=(None, "the GPU"))
    assert admission.admit(tiny_models, params, 4096, seconds=500.0, max_seconds=600.0).seconds == 500.0


# In a child process: an address-space limit, once set, cannot be raised again by the process itself.
AS_LIMIT_CHILD = """
import resource
from engine.editing import admission

unlimited = admission.host_free_bytes()
with open("/proc/self/status", encoding="ascii") as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
margin = 256 * 2**20
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (used + margin, hard))
print(unlimited, admission.host_free_bytes(), margin)
"""


def test_free_memory_is_read_within_an_address_space_limit():
    """Under RLIMIT_AS the free host memory is what the limit still leaves this process (at most the
    256 MB set above what it already maps), not the machine's available RAM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", AS_LIMIT_CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    unlimited, limited, margin = (int(word) for word in done.stdout.split())
    assert 0 < limited <= margin < unlimited


class _Owner:
    id = 1

    def send(self, *args, **kwargs) -> bool:
        return True


def test_max_job_seconds_stops_a_job_that_runs_past_it(tiny_models):
    """Without measured step times a job is admitted by memory alone: the cap still stops it running."""
    import time

    from bridge import errors
    from bridge.jobqueue import Job
    from bridge.protocol import Limits
    from engine.jobs import EditRunner
    from tests.bridge.helpers import make_png

    runner = EditRunner(tiny_models, Limits(), job_limits=DEFAULT_LIMITS.lowered(max_job_seconds=0.5))
    images = {"image": make_png(16, 12, 3), "mask": make_png(16, 12, 1, fill=255)}
    params = runner.validate({"timestep_respacing": "1000", "skip_timesteps": 0, "batch_size": 1}, images)
    started = time.monotonic()
    with pytest.raises(errors.JobFailed) as caught:
        runner.run(Job("j1", _Owner(), params, images))  # type: ignore[arg-type]
    assert caught.value.code == errors.TOO_LARGE and "limit of 0.5 s per job" in caught.value.message
    assert time.monotonic() - started < 60  # 1000 steps would take minutes here


def test_the_cpu_allocators_failure_is_out_of_memory():
    from engine.models.devices import is_out_of_memory

    message = "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"
    assert is_out_of_memory(RuntimeError(message))


def test_a_gpu_jobs_images_are_checked_against_the_host(tiny_models, monkeypatch):
    monkeypatch.setattr(admission, "host_free_bytes", lambda: 10**9)
    params = EditParams(prompt="", batch_size=1, iterations_num=1)
    with pytest.raises(admission.AdmissionError, match=r"about 4.3 GB on the host, this machine has 1.0"):
        admission.admit(tiny_models, params, 16384 * 16384, free=(10**12, "the GPU"))
    assert admission.admit(tiny_models, params, 1000 * 1000, free=(10**12, "the GPU")).batch_size == 1


def test_admission_counts_the_detail_stage_time_and_its_tile_batch(tiny_models):
    """A job whose first pass fits the time cap but whose detail stage does not is refused with the
    figures; with detail off (or auto, which would skip so dear a stage) the same job is admitted."""
    from bridge import errors
    from bridge.protocol import Limits
    from engine.editing.paper import detail
    from engine.editing.timing import StepTimes
    from engine.jobs import EditRunner
    from tests.bridge.helpers import make_png

    runner = EditRunner(tiny_models, Limits(), job_limits=DEFAULT_LIMITS.lowered(max_job_seconds=2.0))
    StepTimes().put(runner._timing_key(), {"guided": 0.01, "unguided": 0.01, "detail": 0.01})
    images = {"image": make_png(200, 160, 3), "mask": make_png(200, 160, 1, fill=255)}
    job = {"prompt": "a red ball", "timestep_respacing": "20", "skip_timesteps": 0, "batch_size": 1}
    job.update(iterations_num=1, detail_strength=0.5)
    # first pass: 20 guided steps = 0.2 s; the stage: 10 steps x (the tiles over the 200x160 box)
    work = detail.planned_work(EditParams(**job, detail="on"), np.full((160, 200), 255, np.uint8), 32)
    assert work.box_pixels == 200 * 160 and work.tile_steps * 0.01 > 2.0
    with pytest.raises(errors.JobFailed) as caught:
        runner.validate({**job, "detail": "on"}, images)
    stage = detail.work_seconds(
        EditParams(**job, detail="on"), work.tile_steps, {"guided": 0.01, "detail": 0.01}
    )
    assert caught.value.code == errors.TOO_LARGE
    assert f"({describe_seconds(stage)} of it the full-resolution detail stage)" in caught.value.message
    assert "over its limit of about 2 s per job" in caught.value.message
    assert runner.validate({**job, "detail": "off"}, images)["detail"] == "off"
    assert runner.validate({**job, "detail": "auto"}, images)["detail"] == "auto"

    # memory: without a prompt the stage's batch of 4 tiles per candidate outweighs an unguided candidate
    params = EditParams(prompt="", batch_size=1, iterations_num=1, detail="on", precision="fp32")
    free = (10**12, "the GPU")
    plain = admission.admit(tiny_models, params, 4096, free=free).need_bytes
    staged = admission.admit(tiny_models, params, 4096, free=free, detail=(work.tile_steps, 0)).need_bytes
    one = admission.candidate_bytes(admission.footprint(tiny_models), 0, False)
    assert staged - plain == pytest.approx((detail.TILES_PER_CANDIDATE - 1) * one)
