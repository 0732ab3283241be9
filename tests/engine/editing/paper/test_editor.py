"""engine.editing.editor.edit(): any size, soft masks, seeds, cancel, modes; tiny preset (32 px model)."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.editing import editor
from engine.editing.editor import EditParams, edit
from engine.errors import Cancelled, EngineError, InputError
from engine.models import devices

FAST = dict(timestep_respacing="10", skip_timesteps=6, aug_num=2, batch_size=2, iterations_num=1)


def _params(**overrides):
    return EditParams(**{"prompt": "a red ball", **FAST, **overrides})


def _image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))


def _soft_mask(width, height):
    yy, xx = np.mgrid[0:height, 0:width]
    dist = np.hypot(xx - width * 0.55, yy - height * 0.45)
    mask = np.clip((min(width, height) * 0.2 - dist) * 30, 0, 255).astype(np.uint8)
    return Image.fromarray(mask)


def _outside(result_image, source, mask):
    m = np.asarray(mask) == 0
    return np.asarray(result_image)[m], np.asarray(source)[m]


def test_odd_size_soft_mask_keeps_every_outside_pixel_and_reports_everything(tiny_models):
    source, mask = _image(77, 53), _soft_mask(77, 53)
    reports = []
    result = edit(source, mask, tiny_models, _params(preview_every=2), progress=reports.append)
    assert len(result.candidates) == 2
    assert [c.rank for c in result.candidates] == [1, 2]
    combined = [c.scores["combined"] for c in result.candidates]
    assert combined == sorted(combined)
    for candidate in result.candidates:
        assert candidate.image.size == source.size and candidate.image.mode == "RGB"
        got, expected = _outside(candidate.image, source, mask)
        assert np.array_equal(got, expected)
        inside = np.asarray(mask) == 255
        assert not np.array_equal(np.asarray(candidate.image)[inside], np.asarray(source)[inside])
        assert set(candidate.scores) == {"masked_clip", "full_clip", "combined"}
        x, y, w, h = candidate.box
        assert candidate.patch.size == (w, h) and candidate.patch.mode == "RGBA"
        assert np.array_equal(np.asarray(candidate.patch)[..., 3], np.asarray(mask)[y : y + h, x : x + w])
    assert [r.step for r in reports] == [2, 4, 6, 8]  # candidate-steps: 2 candidates, 4 steps
    assert all(r.total == 8 for r in reports)
    assert [r.preview is not None for r in reports] == [False, True, False, True]
    assert reports[1].preview.size == (32, 32)


def test_same_seed_same_candidates_different_seed_different(tiny_models):
    source, mask = _image(41, 39, seed=1), _soft_mask(41, 39)
    first = edit(source, mask, tiny_models, _params(seed=7, skip_timesteps=8))
    again = edit(source, mask, tiny_models, _params(seed=7, skip_timesteps=8))
    other = edit(source, mask, tiny_models, _params(seed=8, skip_timesteps=8))
    assert [c.seed for c in first.candidates] == [c.seed for c in again.candidates]
    assert sorted(c.seed for c in first.candidates) == [7, 8]
    for a, b in zip(first.candidates, again.candidates):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    by_seed = {c.seed: np.asarray(c.image) for c in other.candidates}
    assert sorted(by_seed) == [8, 9]
    first_by_seed = {c.seed: np.asarray(c.image) for c in first.candidates}
    assert not np.array_equal(first_by_seed[7], by_seed[9])
    # a candidate's seed alone reproduces it (batch of one): the same up to float batching effects
    alone = edit(source, mask, tiny_models, _params(seed=8, batch_size=1, skip_timesteps=8))
    assert np.abs(np.asarray(alone.candidates[0].image).astype(int) - first_by_seed[8]).max() <= 2


def test_cancel_stops_within_one_step(tiny_models):
    cancel = threading.Event()
    steps = []

    def on_progress(report):
        steps.append(report.step)
        if report.step == 4:  # the second step of the 2-candidate batch
            cancel.set()

    with pytest.raises(Cancelled):
        edit(
            _image(40, 40),
            _soft_mask(40, 40),
            tiny_models,
            _params(iterations_num=3),
            progress=on_progress,
            cancel=cancel,
        )
    assert steps == [2, 4]


def test_cancel_before_start_runs_nothing(tiny_models):
    cancel = threading.Event()
    cancel.set()
    steps = []
    with pytest.raises(Cancelled):
        edit(_image(40, 40), _soft_mask(40, 40), tiny_models, _params(), progress=steps.append, cancel=cancel)
    assert steps == []


def test_empty_prompt_is_removal_without_clip(tiny_models, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("CLIP used for an empty prompt")

    monkeypatch.setattr(tiny_models.clip, "encode_image", refuse)
    monkeypatch.setattr(tiny_models.clip, "encode_text", refuse)
    source, mask = _image(35, 45), _soft_mask(35, 45)
    result = edit(source, mask, tiny_models, _params(prompt="  "))
    assert [c.seed for c in result.candidates] == [404, 405]  # unscored: generation order
    assert result.candidates[0].scores == {"masked_clip": None, "full_clip": None, "combined": None}
    got, expected = _outside(result.candidates[0].image, source, mask)
    assert np.array_equal(got, expected)


def test_invert_mask_edits_the_outside_and_keeps_the_inside(tiny_models):
    source = _image(48, 40, seed=2)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 255
    result = edit(source, Image.fromarray(mask), tiny_models, _params(invert_mask=True))
    out, src = np.asarray(result.candidates[0].image), np.asarray(source)
    assert np.array_equal(out[mask == 255], src[mask == 255])
    assert not np.array_equal(out[mask == 0], src[mask == 0])


def test_rgba_alpha_kept_outside_and_greyscale_converted(tiny_models):
    rgba, mask = _image(33, 31, "RGBA", seed=3), _soft_mask(33, 31)
    result = edit(rgba, mask, tiny_models, _params(batch_size=1, skip_timesteps=8))
    image = result.candidates[0].image
    assert image.mode == "RGBA"
    got, expected = _outside(image, rgba, mask)
    assert np.array_equal(got, expected)
    grey = Image.fromarray(np.asarray(rgba)[..., 0])
    converted = edit(grey, mask, tiny_models, _params(batch_size=1, skip_timesteps=9))
    assert converted.candidates[0].image.mode == "RGB"
    assert any("greyscale" in note for note in converted.notes)


def test_scribble_survives_more_with_more_skipped_steps(tiny_models):
    source = _image(32, 32, seed=4)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    scribble = np.asarray(source).copy()
    scribble[8:24, 8:24] = (230, 20, 20)
    inside = mask == 255

    def distance_to_scribble(skip):
        params = _params(prompt="", batch_size=1, skip_timesteps=skip)
        result = edit(
            source, Image.fromarray(mask), tiny_models, params, init_image=Image.fromarray(scribble)
        )
        out = np.asarray(result.candidates[0].image).astype(float)
        return np.abs(out[inside] - scribble[inside]).mean()

    assert distance_to_scribble(8) < distance_to_scribble(2)


def test_bad_input_is_a_clear_input_error(tiny_models):
    source = _image(20, 20)
    with pytest.raises(InputError, match="differs"):
        edit(source, Image.new("L", (20, 21), 255), tiny_models, _params())
    with pytest.raises(InputError, match="empty"):
        edit(source, Image.new("L", (20, 20), 0), tiny_models, _params())
    with pytest.raises(InputError, match="skip_timesteps"):
        edit(source, Image.new("L", (20, 20), 255), tiny_models, _params(skip_timesteps=10))
    with pytest.raises(InputError, match="batch_size"):
        edit(source, Image.new("L", (20, 20), 255), tiny_models, _params(batch_size=0))
    with pytest.raises(InputError, match="timestep_respacing"):
        edit(source, Image.new("L", (20, 20), 255), tiny_models, _params(timestep_respacing="abc"))
    with pytest.raises(InputError, match="init image size"):
        edit(source, Image.new("L", (20, 20), 255), tiny_models, _params(), init_image=_image(21, 20))
    with pytest.raises(InputError, match="unknown edit parameter"):
        EditParams.from_dict({"prompt": "x", "steps": 3})


def test_out_of_memory_splits_the_batch_and_gives_the_same_candidates(tiny_models, monkeypatch):
    source, mask = _image(36, 36, seed=5), _soft_mask(36, 36)
    params = _params(batch_size=4, skip_timesteps=9)
    reference = edit(source, mask, tiny_models, params)
    import engine.editing.paper.blended

    real = engine.editing.paper.blended.blended_diffusion
    sizes = []

    def fake_oom(unet, diffusion, init, mask, seeds, *args, **kwargs):
        sizes.append(len(seeds))
        if len(seeds) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(unet, diffusion, init, mask, seeds, *args, **kwargs)

    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", fake_oom)
    split = edit(source, mask, tiny_models, params)
    assert sizes == [4, 2, 1, 1, 1, 1]  # the size that worked is kept for the rest of the job
    assert any("out of memory" in note for note in split.notes)
    assert [c.seed for c in split.candidates] == [c.seed for c in reference.candidates]
    for a, b in zip(split.candidates, reference.candidates):
        assert np.abs(np.asarray(a.image).astype(int) - np.asarray(b.image)).max() <= 2

    def always_oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", always_oom)
    with pytest.raises(EngineError, match="out of memory even for a single candidate"):
        edit(source, mask, tiny_models, params)


def test_half_precision_path_is_selectable(tiny_models, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert editor.amp_dtype_for("auto", cpu) is None
    assert editor.amp_dtype_for("fp32", cpu) is None
    assert editor.amp_dtype_for("bf16", cpu) is torch.bfloat16
    assert editor.amp_dtype_for("fp16", cpu) is torch.float16
    source, mask = _image(32, 32, seed=6), _soft_mask(32, 32)
    full = edit(source, mask, tiny_models, _params(batch_size=1, skip_timesteps=8, precision="fp32"))
    half = edit(source, mask, tiny_models, _params(batch_size=1, skip_timesteps=8, precision="bf16"))
    assert any("ran in bfloat16" in note for note in half.notes)
    a = np.asarray(full.candidates[0].image).astype(int)
    b = np.asarray(half.candidates[0].image).astype(int)
    difference, inside = np.abs(a - b), np.asarray(mask) > 0
    assert difference.max() > 0  # bf16 really ran
    # ... and made the same picture: bf16 keeps 8 mantissa bits (about 0.4 % relative, one 8-bit level of
    # a [-1, 1] image); measured on six scenes and seeds of this setting: at most 1 level, mean 0.03-0.05
    # inside the mask. Up to 4 levels and a mean below 0.25 allow for other CPUs' kernels.
    assert difference.max() <= 4 and difference[inside].mean() < 0.25
    assert not difference[~inside].any()  # outside the mask the source, in either precision
    with pytest.raises(InputError, match="precision"):
        edit(source, mask, tiny_models, _params(precision="fp8"))


def test_large_image_only_the_context_region_is_processed(tiny_models):
    width, height = 4000, 3000
    source = Image.new("RGB", (width, height), (10, 120, 200))
    source.paste(_image(600, 400, seed=7), (3100, 2300))
    mask = np.zeros((height, width), np.uint8)
    mask[2400:2600, 3200:3500] = 255
    mask[2399, 3200:3500] = 90  # a soft edge row
    result = edit(source, Image.fromarray(mask), tiny_models, _params(batch_size=1, skip_timesteps=8))
    x, y, w, h = result.box
    assert w == h == 300 + 2 * 75 and x <= 3200 and y <= 2399 and x + w >= 3500 and y + h >= 2600
    out = np.asarray(result.candidates[0].image)
    assert out.shape == (height, width, 3)
    assert np.array_equal(out[mask == 0], np.asarray(source)[mask == 0])
    # the patch covers what the mask touches (not the whole context box): the image there, alpha = mask
    candidate = result.candidates[0]
    assert candidate.box == (3200, 2399, 300, 201)
    patch = np.asarray(candidate.patch)
    assert np.array_equal(patch[..., :3], out[2399:2600, 3200:3500])
    assert np.array_equal(patch[..., 3], mask[2399:2600, 3200:3500])


def test_class_conditional_models_get_class_zero(tiny_models):
    import dataclasses

    labels_seen = []

    class LabelChecking(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, t, y=None):
            labels_seen.append(y)
            return self.unet(x, t)

    models = dataclasses.replace(tiny_models, unet=LabelChecking(tiny_models.unet), class_cond=True)
    edit(_image(32, 32), _soft_mask(32, 32), models, _params(skip_timesteps=9))
    assert labels_seen and all(y is not None and y.tolist() == [0, 0] for y in labels_seen)


def test_cancel_leaves_no_tensors_of_the_run_alive(tiny_models, monkeypatch):
    import gc
    import weakref

    import engine.editing.paper.blended

    real = engine.editing.paper.blended.blended_diffusion
    refs = []

    def recording(*args, on_step=None, **kwargs):
        def spy(info):
            refs.append(weakref.ref(info.pred_x0))
            on_step(info)

        return real(*args, on_step=spy, **kwargs)

    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", recording)
    cancel = threading.Event()
    with pytest.raises(Cancelled) as caught:
        edit(
            _image(40, 40),
            _soft_mask(40, 40),
            tiny_models,
            _params(),
            progress=lambda r: cancel.set(),
            cancel=cancel,
        )
    assert len(refs) == 2  # step 1 set the flag, step 2 raised
    gc.collect()
    # even while the caller still holds the exception, the run's tensors are gone
    assert caught.value is not None and all(ref() is None for ref in refs)


def test_algorithm1_without_the_vgg16_file_fails_before_any_step(tiny_models, tmp_path, monkeypatch):
    """A real preset asks get_lpips for the managed backbone; a missing file stops the edit up front."""
    import dataclasses

    import engine.editing.paper.blended
    from engine.errors import WeightsMissingError
    from engine.models.registry import get_preset

    def no_diffusion(*args, **kwargs):
        raise AssertionError("a diffusion step ran")

    monkeypatch.setattr(engine.editing.paper.blended, "blended_diffusion", no_diffusion)
    monkeypatch.setattr(tiny_models.clip, "encode_text", no_diffusion)  # not even the text encoder
    real = dataclasses.replace(
        tiny_models,
        preset="default",
        lpips_spec=get_preset("default").lpips,
        weights_dir=tmp_path,
        random_lpips=False,  # as load_models sets it for every preset but the test ones
    )
    steps = []
    for mode in ({"background_preservation_loss": True}, {"local_clip_guided_diffusion": True}):
        with pytest.raises(WeightsMissingError) as info:
            edit(_image(40, 40), _soft_mask(40, 40), real, _params(**mode), progress=steps.append)
        assert "vgg16-397923af.pth" in str(info.value) and str(tmp_path) in str(info.value)
        assert "python -m engine download" in str(info.value)
    assert steps == [] and list(tmp_path.iterdir()) == []
    # the tiny preset keeps its random backbone: no file needed, and the note says so
    seen = {}

    def fake_get_lpips(net, device, pretrained_backbone=True, **kwargs):
        seen.update(net=net, pretrained=pretrained_backbone, **kwargs)
        raise Cancelled()

    monkeypatch.setattr("engine.models.clip.get_lpips", fake_get_lpips)
    with pytest.raises(Cancelled):
        edit(_image(40, 40), _soft_mask(40, 40), tiny_models, _params(background_preservation_loss=True))
    assert seen["net"] == "vgg" and seen["pretrained"] is False
