"""The detail stage for a latent preset (engine/editing/latent/detail.py) on the shipped ``toy-latent``
models (32 px, a VAE factor of 2) and a 128 px toy scene: a 96 px box. The stage re-samples each candidate
at the document's resolution over native-size latent tiles: the background byte for byte, the ranking kept,
progress across both stages, the step timer, a cancel inside it, its plan the one estimates count, and a
soft selection's change map on the box's grid."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.editing.editor import EditParams, edit
from engine.editing.latent.detail import box_masks, vae_factor
from engine.editing.paper import detail as paper_detail
from engine.editing.timing import StepTimer, StepTimes
from engine.errors import Cancelled
from toyworld.scenes import edit_case

QUICK = dict(timestep_respacing="10", skip_timesteps=0, batch_size=2, iterations_num=1, seed=7)


@pytest.fixture(scope="module")
def toy_latent():
    from engine.models.loading import load_models

    return load_models("toy-latent", None, "cpu")


@pytest.fixture(scope="module")
def scene():
    return edit_case(31, 128)


def _params(case, **overrides) -> EditParams:
    return EditParams(**{"prompt": case.prompt, **QUICK, "detail_strength": 0.3, **overrides})


def test_detail_on_a_latent_preset_at_document_resolution_keeps_the_background(toy_latent, scene, tmp_path):
    plain = edit(scene.image, scene.mask, toy_latent, _params(scene))
    assert not any("detail" in note for note in plain.notes)  # off by default, as for the paper method
    clock = iter(range(10**6))
    timer = StepTimer(StepTimes(tmp_path / "times.json"), "key", clock=lambda: float(next(clock)))
    reports = []
    sharp = edit(scene.image, scene.mask, toy_latent, _params(scene, detail="on"), progress=reports.append,
                 timer=timer)  # fmt: skip
    note = [n for n in sharp.notes if n.startswith("full-resolution detail: on")]
    assert note and "x 3 steps x 2 candidates at 96x96" in note[0], sharp.notes
    steps = [r.step for r in reports]
    assert steps == sorted(set(steps)) and steps[-1] == reports[-1].total > 10 * 2  # on past the first pass
    keep = np.asarray(scene.mask) == 0
    source = np.asarray(scene.image)
    assert [c.seed for c in sharp.candidates] == [c.seed for c in plain.candidates]  # the same ranking
    for before, after in zip(plain.candidates, sharp.candidates):
        image = np.asarray(after.image.convert("RGB"))
        assert image.shape == source.shape and np.array_equal(image[keep], source[keep])
        assert not np.array_equal(image, np.asarray(before.image.convert("RGB")))
    again = edit(scene.image, scene.mask, toy_latent, _params(scene, detail="on"))
    pairs = zip(sharp.candidates, again.candidates)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in pairs)  # seeded
    assert timer.save()["detail"] > 0


def test_the_plan_is_what_estimates_and_admission_count(toy_latent, scene):
    reports = []
    edit(scene.image, scene.mask, toy_latent, _params(scene, detail="on"), progress=reports.append)
    planned = paper_detail.planned_work(_params(scene, detail="on"), np.asarray(scene.mask), 32)
    assert reports[-1].total == 10 * 2 + planned.tile_steps and planned.box_pixels == 96 * 96
    auto = edit(scene.image, scene.mask, toy_latent, _params(scene, detail="auto"))
    assert any(n.startswith("full-resolution detail: off (auto: ") for n in auto.notes), auto.notes
    small = edit_case(31, 32)  # the region at the model's size: nothing to add
    result = edit(small.image, small.mask, toy_latent, _params(small, detail="on"))
    assert any("not needed" in n for n in result.notes)


def test_cancel_inside_the_latent_detail_stage_then_the_engine_edits_again(toy_latent, scene):
    cancel = threading.Event()
    seen, totals = [], []

    def on_progress(report):
        seen.append(report.step)
        totals.append(report.total)
        if report.step > 10 * 2:
            cancel.set()

    with pytest.raises(Cancelled):
        edit(scene.image, scene.mask, toy_latent, _params(scene, detail="on"), progress=on_progress,
             cancel=cancel)  # fmt: skip
    assert 10 * 2 < max(seen) < totals[-1]
    assert len(edit(scene.image, scene.mask, toy_latent, _params(scene, batch_size=1)).candidates) == 1


def test_box_masks_binary_or_change_map_on_the_box_grid(toy_latent):
    from engine.editing.latent.blended_latent import encode

    latent = encode(toy_latent.vae, torch.zeros(1, 3, 32, 32))
    assert vae_factor(toy_latent.vae) == 32 // latent.shape[-1] == 2
    crop = np.zeros((40, 24), np.uint8)
    crop[8:32, 4:20] = 255
    hard = box_masks(crop, (10, 6), True, "cpu")
    assert hard.change is None and hard.final.shape == (1, 1, 10, 6) and int(hard.final.sum()) == 6 * 4
    soft = box_masks((crop // 2).astype(np.uint8), (10, 6), True, "cpu")
    assert soft.change is not None and torch.equal(soft.final, hard.final)
    assert box_masks((crop // 2).astype(np.uint8), (10, 6), False, "cpu").change is None
