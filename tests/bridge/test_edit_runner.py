"""EditRunner, the real job runner: parameter checks and how engine outcomes become wire replies.

engine.editing.editor.edit is replaced by stand-ins here (the real one runs in test_engine_process.py), so
these tests can raise out-of-memory errors and the like on purpose.
"""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace
from typing import Any, List

import pytest
import torch
from PIL import Image

from bridge import errors
from bridge.jobqueue import Job
from bridge.protocol import Limits
from engine import jobs as server_module
from engine.editing import editor
from engine.errors import Cancelled, InputError, WeightsMissingError
from engine.jobs import EditRunner
from tests.bridge.helpers import make_png

MODELS = SimpleNamespace(device=torch.device("cpu"), preset="tiny", image_size=32, class_cond=False)


class Owner:
    id = 1

    def __init__(self) -> None:
        self.sent: List[Any] = []

    def send(self, msg_type: str, fields: Any = None, attachments: Any = (), droppable: bool = False) -> bool:
        self.sent.append((msg_type, fields, list(attachments)))
        return True


def job(params: Any = None) -> Job:
    images = {"image": make_png(16, 12, 4), "mask": make_png(16, 12, 1, fill=255)}
    return Job("j1", Owner(), dict(params or {}), images)  # type: ignore[arg-type]


@pytest.fixture
def runner(monkeypatch):
    released: List[int] = []
    monkeypatch.setattr(server_module, "release_memory", lambda: released.append(1))
    result = EditRunner(MODELS, Limits())
    result.released = released  # type: ignore[attr-defined]
    return result


@pytest.mark.parametrize(
    "exception, code",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), errors.OUT_OF_MEMORY),
        (RuntimeError("CUDA error: out of memory"), errors.OUT_OF_MEMORY),
        (MemoryError(), errors.OUT_OF_MEMORY),
        (InputError("the mask is empty: select a region first"), errors.INVALID_INPUT),
        (Cancelled(), errors.CANCELLED),
        (WeightsMissingError("weights missing: run python -m engine download"), "weights_missing"),
        (ValueError("a bug"), errors.INTERNAL_ERROR),
    ],
)
def test_engine_failures_become_coded_errors_and_memory_is_released(runner, monkeypatch, exception, code):
    def failing_edit(*args: Any, **kwargs: Any) -> Any:
        raise exception

    monkeypatch.setattr(editor, "edit", failing_edit)
    the_job = job()
    with pytest.raises(errors.JobFailed) as info:
        runner.run(the_job)
    assert info.value.code == code
    assert info.value.message
    assert runner.released == [1]
    assert the_job.images == {}  # the request's PNGs are let go


def test_a_successful_edit_becomes_ranked_rgba_pngs_and_progress(runner, monkeypatch):
    seen = {}

    def fake_edit(image, mask, models, params, init_image=None, progress=None, cancel=None, timer=None):
        seen.update(
            size=image.size, mask_mode=mask.mode, prompt=params.prompt, cancel=cancel, init=init_image
        )
        progress(
            editor.Progress(step=1, total=2, candidate_offset=0, preview=Image.new("RGB", (8, 8), "red"))
        )
        progress(editor.Progress(step=2, total=2, candidate_offset=0, preview=None))
        patch = Image.new("RGBA", (6, 4), (10, 20, 30, 255))
        candidates = [
            editor.Candidate(
                rank=1, seed=11, scores={"combined": 0.9}, image=image, patch=patch, box=(1, 2, 6, 4)
            ),
            editor.Candidate(
                rank=2, seed=12, scores={"combined": float("nan")}, image=image, patch=patch, box=(1, 2, 6, 4)
            ),
        ]
        return editor.EditResult(candidates=candidates, box=(1, 2, 6, 4), notes=["a note"])

    monkeypatch.setattr(editor, "edit", fake_edit)
    the_job = job({"prompt": "a red ball", "preview_every": 1})
    fields, attachments = runner.run(the_job)
    assert seen["size"] == (16, 12) and seen["prompt"] == "a red ball" and seen["init"] is None
    assert seen["cancel"] is the_job.cancel and isinstance(seen["cancel"], threading.Event)
    assert [c["rank"] for c in fields["candidates"]] == [1, 2]
    assert fields["candidates"][0] == {
        "rank": 1,
        "seed": 11,
        "scores": {"combined": 0.9},
        "box": [1, 2, 6, 4],
        "attachment": "candidate0",
    }
    assert fields["box"] == [1, 2, 6, 4] and fields["notes"] == ["a note"]
    names = [name for name, _data in attachments]
    assert names == ["candidate0", "candidate1"]
    patch = Image.open(io.BytesIO(attachments[0][1]))
    assert (patch.mode, patch.size, patch.getpixel((0, 0))) == ("RGBA", (6, 4), (10, 20, 30, 255))
    progress = [entry for entry in the_job.owner.sent if entry[0] == "progress"]
    assert [p[1]["step"] for p in progress] == [1, 2]
    assert progress[0][2][0][0] == "preview" and progress[1][2] == []
    assert runner.released == []


def test_undecodable_png_body_is_invalid_input(runner):
    the_job = job()
    the_job.images["image"] = make_png(16, 12, 4)[:50]  # a valid header, then nothing
    with pytest.raises(errors.JobFailed) as info:
        runner.run(the_job)
    assert info.value.code == errors.INVALID_INPUT and "image" in info.value.message


def test_validate_checks_names_and_types_against_edit_params(runner):
    images: Any = {}
    checked = runner.validate(
        {"prompt": "x", "clip_guidance_lambda": 500, "seed": None, "ddim": True}, images
    )
    assert checked["clip_guidance_lambda"] == 500.0 and isinstance(checked["clip_guidance_lambda"], float)
    assert checked["seed"] is None
    bad = [
        {"no_such_option": 1},
        {"batch_size": "4"},
        {"batch_size": 2.0},
        {"batch_size": True},
        {"ddim": 1},
        {"prompt": 5},
        {"prompt": None},
        {"range_lambda": "50"},
        {"batch_size": 0},  # the editor's own range checks run too
        {"precision": "fp8"},
    ]
    for params in bad:
        with pytest.raises(errors.JobFailed) as info:
            runner.validate(params, images)
        assert info.value.code == errors.INVALID_INPUT, params


def test_preset_edit_defaults_fill_the_parameters_a_request_leaves_out():
    recommended = {"timestep_respacing": "25", "skip_timesteps": 5, "clip_guidance_lambda": 500}
    runner = EditRunner(MODELS, Limits(), recommended)
    checked = runner.validate({"prompt": "x", "skip_timesteps": 3}, {})
    assert checked == {
        "prompt": "x",
        "timestep_respacing": "25",
        "skip_timesteps": 3,
        "clip_guidance_lambda": 500.0,
    }
    assert EditRunner(MODELS, Limits()).validate({"prompt": "x"}, {}) == {"prompt": "x"}
    assert runner.status()["models"]["edit_defaults"] == recommended  # a client can show them


def test_extend_runner_checks_sides_and_passes_them_to_the_job(monkeypatch):
    from engine.editing import extend as extend_module
    from engine.jobs import ExtendRunner, job_runners

    assert set(job_runners(MODELS, Limits())) == {"edit", "extend"}
    runner = ExtendRunner(MODELS, Limits())
    assert runner.required_images == ("image",) and runner.optional_images == ()
    checked = runner.validate({"prompt": "sea", "right": 5, "side_prompts": {"right": "waves"}}, {})
    assert checked == {"prompt": "sea", "right": 5, "side_prompts": {"right": "waves"}}
    for bad in (
        {"right": -1},
        {"right": 1.5},
        {"left": 0},
        {"right": 2, "side_prompts": {"up": "x"}},
        {"right": 2, "side_prompts": ["x"]},
        {"right": 2, "invert_mask": True},
        {"right": 2, "bogus": 1},
    ):
        with pytest.raises(errors.JobFailed) as info:
            runner.validate(bad, {})
        assert info.value.code == errors.INVALID_INPUT
    seen = {}

    def fake_extend(image, spec, models, params, progress=None, cancel=None):
        seen.update(size=image.size, spec=spec, prompt=params.prompt)
        progress(editor.Progress(step=1, total=1, candidate_offset=0))
        patch = Image.new("RGBA", (21, 12), (1, 2, 3, 255))
        candidate = editor.Candidate(
            rank=1, seed=4, scores={"combined": 0.5}, image=patch, patch=patch, box=(0, 0, 21, 12)
        )
        return extend_module.ExtendResult([candidate], (21, 12), (0, 0), 3, ["n"])

    monkeypatch.setattr(extend_module, "extend", fake_extend)
    the_job = Job("j2", Owner(), dict(checked), {"image": make_png(16, 12, 4)}, "extend")  # type: ignore[arg-type]
    fields, attachments = runner.run(the_job)
    assert seen["size"] == (16, 12) and seen["spec"].right == 5 and seen["prompt"] == "sea"
    assert seen["spec"].side_prompts == {"right": "waves"}
    assert fields["canvas_size"] == [21, 12] and fields["offset"] == [0, 0] and fields["windows"] == 3
    assert fields["candidates"][0]["attachment"] == "candidate0" and [n for n, _ in attachments] == [
        "candidate0"
    ]


def test_quality_mode_sets_the_levers_the_request_leaves_out_and_status_has_estimates():
    recommended = {"timestep_respacing": "25", "skip_timesteps": 5, "clip_guidance_lambda": 500, "aug_num": 8}
    runner = EditRunner(MODELS, Limits(), recommended)
    paper = runner.validate({"prompt": "x"}, {})
    assert paper == {"prompt": "x", **recommended, "clip_guidance_lambda": 500.0}
    fast = runner.validate({"prompt": "x", "quality": "fast", "aug_num": 6}, {})
    assert fast["quality"] == "fast" and fast["aug_num"] == 6  # the request's option wins
    assert (fast["timestep_respacing"], fast["skip_timesteps"], fast["guidance_grad"]) == ("8", 2, "x0")
    with pytest.raises(errors.JobFailed, match="quality must be one of"):
        runner.validate({"prompt": "x", "quality": "turbo"}, {})
    status = runner.status()
    assert status["estimates"] == {"paper": None, "balanced": None, "fast": None}  # nothing measured yet
    assert status["step_times"] == {}
    # each mode's schedule as the engine resolves it, for the docker's count of the detail stage's steps
    assert status["schedules"] == {"paper": 25, "balanced": 20, "fast": int(fast["timestep_respacing"])}


def test_patch_pngs_use_the_level_the_client_asked_for(runner, monkeypatch):
    import numpy as np

    from bridge.png import decode_png
    from engine.editing.shared import imaging

    source = Image.new("RGB", (16, 12), (30, 60, 90))  # flat: compresses well
    mask = np.zeros((12, 16), np.uint8)
    mask[3:9, 4:10] = 200
    plan = imaging.plan_blend(source, mask, (0, 0, 16, 12))
    pixels = imaging.CandidatePixels(plan, source, Image.new("RGB", (16, 12), (250, 0, 0)))
    candidate = editor.Candidate(rank=1, seed=3, scores={}, pixels=pixels)

    def fake_edit(*args: Any, **kwargs: Any) -> Any:
        return editor.EditResult(candidates=[candidate], box=(0, 0, 16, 12))

    monkeypatch.setattr(editor, "edit", fake_edit)
    sizes = {}
    for level in (None, 0, 9):
        the_job = job({"prompt": "x"})
        the_job.png_level = level
        fields, attachments = runner.run(the_job)
        assert fields["candidates"][0]["box"] == [4, 3, 6, 6]  # only what the mask touches
        width, height, mode, rgba = decode_png(attachments[0][1])
        assert (width, height, mode, bytes(rgba)) == (6, 6, "RGBA", pixels.patch_rgba().tobytes())
        sizes[level] = len(attachments[0][1])
    assert sizes[0] > 6 * (6 * 4 + 1) > sizes[9]  # level 0 is stored: every row, uncompressed
    assert sizes[0] > sizes[None]  # no level asked: the default compresses (a remote engine)


def test_an_edit_job_stores_its_step_times_and_the_time_around_them(runner, monkeypatch):
    def timed_edit(image, mask, models, params, init_image=None, progress=None, cancel=None, timer=None):
        timer.begin()
        timer.start()
        for _ in range(3):
            timer.step(True, 1)
        timer.end_steps(1)
        patch = Image.new("RGBA", (6, 4), (10, 20, 30, 255))
        candidate = editor.Candidate(rank=1, seed=11, scores={}, image=image, patch=patch, box=(1, 2, 6, 4))
        return editor.EditResult(candidates=[candidate], box=(1, 2, 6, 4), notes=[])

    monkeypatch.setattr(editor, "edit", timed_edit)
    fields, _ = runner.run(job({"prompt": "a red ball"}))
    times = fields["step_times"]  # the reply carries what this job stored, for the docker's next estimate
    assert set(times) == {"guided", "edit", "run", "candidate"}
    assert runner.status()["step_times"] == times
    from engine.editing.timing import candidate_seconds

    one = EditRunner(MODELS, Limits()).validate({"prompt": "x", "batch_size": 1, "iterations_num": 1}, {})
    assert fields["estimates"]["paper"] == pytest.approx(candidate_seconds(editor.EditParams(**one), times))
