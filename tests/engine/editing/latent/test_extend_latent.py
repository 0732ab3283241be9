"""extend() on a latent preset: the shipped ``toy-latent`` models run each window through Blended Latent
Diffusion (engine/editing/latent/extend_window.py);
the original stays byte for byte, the candidates are ranked and
repeatable, progress and cancel work as for the paper's method, and ``python -m engine extend --models
toy-latent`` writes its results."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.editing.extend import ExtendSpec, extend
from engine.editing.shared.params import EditParams
from engine.errors import Cancelled, InputError

ROOT = Path(__file__).resolve().parents[4]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
SPEC = ExtendSpec(right=16, left=8, side_prompts={"left": "a blue square"})
STEPS = 7  # timestep_respacing 10, skip_timesteps 3


@pytest.fixture(scope="module")
def toy_latent():
    from engine.models.loading import load_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_models("toy-latent", None, "cpu")
    torch.set_num_threads(threads)


def _source() -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))


def _params(**values) -> EditParams:
    base = dict(prompt="a red circle", timestep_respacing="10", skip_timesteps=3, batch_size=2, seed=11)
    return EditParams(**{**base, "iterations_num": 1, **values})


def test_latent_extend_keeps_the_original_ranks_and_repeats(toy_latent):
    source = _source()
    reports = []
    result = extend(source, SPEC, toy_latent, _params(), progress=reports.append)
    assert result.canvas_size == (64, 30) and result.offset == (8, 0)
    assert [c.rank for c in result.candidates] == [1, 2]
    assert sorted(c.seed for c in result.candidates) == [11, 12]
    combined = [c.scores["combined"] for c in result.candidates]
    assert combined == sorted(combined)
    assert {"combined_left", "combined_right"} <= set(result.candidates[0].scores)
    border = np.pad(np.asarray(source), ((0, 0), (8, 16), (0, 0)), mode="edge")  # the canvas before diffusion
    images = [np.asarray(c.image) for c in result.candidates]
    for pixels in images:
        assert pixels.shape == (30, 64, 3)
        assert np.array_equal(pixels[:, 8:48], np.asarray(source))  # every original pixel, byte for byte
        assert not np.array_equal(pixels[:, :8], border[:, :8])  # both new areas were repainted
        assert not np.array_equal(pixels[:, 48:], border[:, 48:])
    assert not np.array_equal(images[0], images[1])
    assert any("Blended Latent Diffusion per window: 7 of 10 DDIM steps" in note for note in result.notes)

    steps = [r.step for r in reports]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert reports[-1].step == reports[-1].total == STEPS * result.windows * 2  # steps x windows x candidates

    again = extend(source, SPEC, toy_latent, _params())
    assert [c.seed for c in again.candidates] == [c.seed for c in result.candidates]
    for first, second in zip(result.candidates, again.candidates):
        assert first.image.tobytes() == second.image.tobytes()


def test_latent_extend_cancels_between_steps(toy_latent):
    cancel = threading.Event()
    reports = []

    def on_progress(report):
        reports.append(report)
        cancel.set()  # after the first step: the next one must not run

    with pytest.raises(Cancelled):
        extend(_source(), SPEC, toy_latent, _params(), progress=on_progress, cancel=cancel)
    assert len(reports) == 1 and reports[0].step < reports[0].total


def test_latent_extend_checks_the_latent_schedule(toy_latent):
    with pytest.raises(InputError, match="skip_timesteps"):
        extend(_source(), SPEC, toy_latent, _params(skip_timesteps=10))


def test_latent_extend_without_a_ranking_clip_keeps_seed_order(toy_latent):
    models = dataclasses.replace(toy_latent, clip=None)
    result = extend(_source(), ExtendSpec(right=8), models, _params())
    assert [c.seed for c in result.candidates] == [11, 12]
    assert all(c.scores["combined"] is None for c in result.candidates)
    assert np.array_equal(np.asarray(result.candidates[0].image)[:, :40], np.asarray(_source()))


def test_cli_extend_with_toy_latent_writes_ranked_results(tmp_path):
    source = np.asarray(_source())
    Image.fromarray(source).save(tmp_path / "image.png")
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "engine", "extend", "-i", str(tmp_path / "image.png"), "-p", "a red circle",
        "--left", "8", "--right", "16", "--models", "toy-latent", "--device", "cpu", "--timestep_respacing",
        "10", "--skip_timesteps", "3", "--batch_size", "2", "--iterations_num", "1", "--seed", "3",
        "--output_path", str(out), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "scores.json").read_text())
    files = [c["file"] for c in summary["candidates"]]
    assert sorted(os.listdir(out)) == sorted(files + ["scores.json"]) and len(files) == 2
    assert files == sorted(files)  # name order is rank order
    assert summary["canvas_size"] == [64, 30] and summary["offset"] == [8, 0]
    for name in files:
        pixels = np.asarray(Image.open(out / name))
        assert pixels.shape == (30, 64, 3) and np.array_equal(pixels[:, 8:48], source)


def test_bridge_extend_job_runs_on_toy_latent(toy_latent):
    import io

    from bridge.jobqueue import Job
    from bridge.protocol import Limits
    from engine.jobs import ExtendRunner

    class Owner:
        id = 1

        def __init__(self) -> None:
            self.sent: list = []

        def send(self, msg_type, fields=None, attachments=(), droppable=False) -> bool:
            self.sent.append(fields)
            return True

    png = io.BytesIO()
    _source().save(png, "PNG")
    runner = ExtendRunner(toy_latent, Limits())
    params = {"prompt": "a red circle", "right": 16, "timestep_respacing": "10", "skip_timesteps": 3}
    checked = runner.validate(
        {**params, "batch_size": 2, "iterations_num": 1, "seed": 5}, {"image": png.getvalue()}
    )
    owner = Owner()
    fields, attachments = runner.run(Job("j", owner, checked, {"image": png.getvalue()}, "extend"))  # type: ignore[arg-type]
    assert fields["canvas_size"] == [56, 30] and fields["offset"] == [0, 0] and len(attachments) == 2
    last = [sent for sent in owner.sent if sent and "step" in sent][-1]
    assert last["step"] == last["total"] == STEPS * fields["windows"] * 2
    patch = np.asarray(Image.open(io.BytesIO(attachments[0][1])))
    assert (patch[:, :40, 3] == 0).all() and (patch[:, 40:, 3] == 255).all()
