"""Issue 37 on the shipped ``toy-latent`` models: a soft selection's values as per-pixel strength
(latent/change_map.py, Differential Diffusion) and the seam levers after decoding (latent/seam.py). A hard
selection with the levers off gives the bytes of plain Blended Latent Diffusion; whatever the levers, every
pixel outside the selection is the source's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

import engine.editing.latent.blended_latent as bld
from engine.editing.editor import edit
from engine.editing.latent.change_map import StepMasks, change_on_grid, free_cells, free_steps, is_binary
from engine.editing.latent.seam import band, border_ring, drawn, fix_seam, levers
from engine.editing.shared.params import EditParams, validate_params
from engine.errors import InputError
from toyworld.soft import ramp_row, rank_correlation


@pytest.fixture(scope="module")
def toy_latent():
    from engine.models.loading import load_models

    return load_models("toy-latent", None, "cpu")


def _scene(feather: float = 0.0):
    image = Image.new("RGB", (32, 32), (200, 200, 200))
    ImageDraw.Draw(image).rectangle((2, 2, 9, 9), fill=(30, 60, 220))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((12, 10, 27, 25), fill=255)
    return image, mask.filter(ImageFilter.GaussianBlur(feather)) if feather else mask


def _params(**values) -> EditParams:
    base = dict(prompt="a red circle", timestep_respacing="10", skip_timesteps=0, seed=31, iterations_num=1)
    return EditParams(**{**base, "batch_size": 2, **values})


def _bytes(result) -> list:
    return [np.asarray(c.image.convert("RGB")) for c in result.candidates]


def test_free_cells_binary_map_is_blended_latent_diffusion_and_soft_values_run_their_share():
    binary = torch.tensor([[[[0.0, 1.0]]]])
    for steps in (4, 10, 25):
        assert all(free_cells(binary, i, steps).tolist() == [[[[0.0, 1.0]]]] for i in range(steps))
    assert free_steps(torch.tensor([[[[0.0, 0.5, 1.0]]]]), 10) == [0, 5, 10]
    assert free_steps(torch.tensor([[[[0.02, 0.3, 0.9]]]]), 10) == [3, 3, 9]  # the minimum of free steps
    assert free_steps(torch.tensor([[[[0.02]]]]), 2) == [2]  # fewer steps left than the minimum: all
    change = torch.rand(1, 1, 6, 6)  # a cell free at one step stays free at every later one
    masks = [free_cells(change, i, 12) for i in range(12)]
    assert all(bool((later >= earlier).all()) for earlier, later in zip(masks, masks[1:]))


def test_a_hard_selection_step_masks_are_the_phases_of_progressive_shrinking():
    grid = torch.zeros(1, 1, 8, 8)
    grid[..., 2:6, 3:7] = 1
    phases = bld.shrinking_masks(grid, True)
    hard = StepMasks(phases)
    assert torch.equal(hard.final, grid)
    assert all(torch.equal(hard.at(i, 20), bld.phase_mask(phases, i, 20)) for i in range(20))
    crop = np.zeros((16, 16), np.uint8)
    crop[4:12, 6:14] = 255
    assert is_binary(crop) and not is_binary(np.where(crop, 128, 0))
    change = change_on_grid(np.where(crop, 128, 0).astype(np.uint8), 8, "cpu")
    assert torch.equal(change > 0, grid > 0) and abs(float(change.max()) - 128 / 255) < 1e-6


def test_hard_selection_with_the_levers_off_gives_the_same_bytes_and_the_soft_rule_does_not_touch_it(
    toy_latent, monkeypatch
):
    image, mask = _scene()
    before = _bytes(edit(image, mask, toy_latent, _params(seam_fix="off", differential=False)))
    differential = _bytes(edit(image, mask, toy_latent, _params(seam_fix="off")))
    assert all(np.array_equal(a, b) for a, b in zip(before, differential))
    seen = []
    real = bld.blended_latent_diffusion

    def plain_list(unet, scheduler, source, masks, seeds, **kwargs):  # the loop as it was: a list of phases
        seen.append(masks.change is None)
        return real(unet, scheduler, source, list(masks.phases), seeds, **kwargs)

    monkeypatch.setattr(bld, "blended_latent_diffusion", plain_list)
    listed = _bytes(edit(image, mask, toy_latent, _params(seam_fix="off")))
    assert seen == [True] and all(np.array_equal(a, b) for a, b in zip(before, listed))


@pytest.mark.parametrize("seam_fix", ["band", "residual", "colour", "colour+residual+band"])
def test_each_seam_fix_changes_only_inside_the_selection(toy_latent, seam_fix):
    image, mask = _scene(feather=1.5)
    plain = edit(image, mask, toy_latent, _params(seam_fix="off"))
    fixed = edit(image, mask, toy_latent, _params(seam_fix=seam_fix))
    assert f"seam fix {seam_fix}" in fixed.notes[-1] and "per-pixel strength" in fixed.notes[-1]
    outside = np.asarray(mask) == 0
    source = np.asarray(image)
    for candidate in fixed.candidates:
        assert np.array_equal(np.asarray(candidate.image.convert("RGB"))[outside], source[outside])
    if seam_fix != "colour":  # the colour match needs undrawn pixels in the border ring: may find none here
        assert any(not np.array_equal(a, b) for a, b in zip(_bytes(plain), _bytes(fixed)))


def test_residual_gives_the_source_back_where_nothing_was_drawn_and_leaves_a_drawn_object():
    torch.manual_seed(0)
    source = torch.rand(1, 3, 16, 16) * 2 - 1
    reconstruction = (source + 0.05 * torch.randn_like(source)).clamp(-1, 1)  # the VAE's redraw, a little off
    drawn = reconstruction.clone()
    drawn[..., 4:8, 4:8] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]  # a red square drawn
    mask = torch.ones(1, 1, 16, 16)
    out = fix_seam("residual", torch.cat([reconstruction, drawn]), reconstruction, source, mask)
    assert torch.allclose(out[0], source[0], atol=1e-6)  # undrawn: the source itself
    assert torch.equal(out[1, :, 4:8, 4:8], drawn[0, :, 4:8, 4:8])  # the drawn object: as drawn
    assert fix_seam("off", drawn, reconstruction, source, mask) is drawn


def test_colour_match_moves_a_shifted_redraw_back_to_the_source_levels():
    source = torch.full((1, 3, 32, 32), -0.2)
    source[:, 0] = 0.3
    shifted = source + 0.08  # the VAE's redraw a few levels brighter everywhere
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    assert int(border_ring(mask).sum()) == 16 * 16 - 12 * 12  # 2 px inside the border
    out = fix_seam("colour", shifted, shifted, source, mask)
    assert float((out - source).abs().max()) < 0.01 < float((shifted - source).abs().max())


def test_the_band_is_0_on_the_border_and_1_deep_inside_and_levers_keep_their_order():
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 5:35, 5:35] = 1
    fade = band(mask)
    assert float(fade[mask == 0].abs().max()) == 0.0 and float(fade[0, 0, 20, 20]) > 0.99
    assert float(fade[0, 0, 5, 20]) < 0.3 and float(fade[0, 0, 5, 20]) < float(fade[0, 0, 8, 20])
    assert levers("band+colour") == ["colour", "band"] and levers("off") == []


def _rgb(*values: int) -> torch.Tensor:
    return (torch.tensor(values, dtype=torch.float32) / 127.5 - 1).view(1, 3, 1, 1)


def test_drawn_spares_a_new_hue_and_lets_a_lightness_redraw_fade():
    grey, near_black = _rgb(128, 128, 128), _rgb(30, 30, 30)
    big = torch.ones(1, 1, 41, 41)  # read at the centre, far from the border where the RGB reading ramps in
    at = lambda x: x.expand(1, 3, 41, 41)  # noqa: E731 - a uniform candidate or source over the square
    centre = lambda d: float(d[0, 0, 20, 20])  # noqa: E731
    assert centre(drawn(at(_rgb(96, 96, 96)), at(grey), big)) == 0.0  # the background redrawn darker: fades
    assert centre(drawn(at(_rgb(0, 0, 200)), at(near_black), big)) == 1.0  # blue on near-black: spared
    assert centre(drawn(at(_rgb(255, 0, 255)), at(_rgb(240, 240, 240)), big)) == 1.0  # magenta on white
    assert 0.0 < centre(drawn(at(_rgb(160, 100, 100)), at(grey), big)) < 1.0  # a faint red tint: in between


def test_a_lightness_change_is_spared_inside_but_fades_at_the_border_where_a_new_hue_is_kept():
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 5:35, 5:35] = 1  # a side of 30 px: the RGB reading ramps in over 3 px
    dark = drawn(_rgb(20, 20, 20).expand(1, 3, 40, 40), _rgb(200, 200, 200).expand(1, 3, 40, 40), mask)
    assert float(dark[0, 0, 20, 20]) == 1.0 and float(dark[0, 0, 5, 20]) < 0.25  # a dark halo on the border
    assert float(dark[0, 0, 5, 20]) < float(dark[0, 0, 6, 20]) < float(dark[0, 0, 8, 20])
    blue = drawn(_rgb(0, 0, 200).expand(1, 3, 40, 40), _rgb(30, 30, 30).expand(1, 3, 40, 40), mask)
    assert float(blue[0, 0, 5, 20]) == 1.0  # an object drawn up to the border keeps its edge


def test_poisson_lifts_an_offset_redraw_back_and_keeps_a_drawn_edge():
    source = torch.linspace(-0.5, 0.5, 24).repeat(1, 3, 24, 1)  # a horizontal ramp
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., 6:18, 6:18] = 1
    offset = source + 0.1 * mask  # the redraw 0.1 too bright inside
    assert float((fix_seam("poisson", offset, None, source, mask) - source).abs().max()) < 1e-3
    drawn = offset.clone()
    drawn[..., 10:14, 10:14] += 0.5  # an object inside
    out = fix_seam("poisson", drawn, None, source, mask)
    step = lambda x: float(x[0, 0, 12, 12] - x[0, 0, 12, 8])  # noqa: E731 - object against its surround
    assert abs(step(out) - step(drawn)) < 0.02 and abs(float(out[0, 0, 12, 6] - source[0, 0, 12, 6])) < 0.02


def test_bad_seam_fix_is_refused_with_the_choices():
    choices = "seam_fix must be auto, off or one or more of colour, residual, poisson, band joined by"
    for bad in ("poison", "band+band", "band+", "both"):
        with pytest.raises(InputError, match=choices):
            validate_params(_params(seam_fix=bad))
    validate_params(_params(seam_fix="band+colour"))
    validate_params(_params(seam_fix="poisson+band"))


def test_on_a_ramp_selection_the_change_grows_with_the_value_and_is_none_where_it_is_0(toy_latent):
    params = _params(batch_size=2, timestep_respacing="12").to_dict()
    row = ramp_row(toy_latent, params, scenes=4, first=30)  # scenes 30-31 alone: 0.68 even with levers off
    assert row["zero_exact"] and row["change_where_zero"] == 0.0
    rings = {int(k): v for k, v in row["rings"].items() if int(k) > 0}
    expected = rank_correlation(list(rings), list(rings.values()))
    assert row["rank_correlation"] == pytest.approx(expected, abs=1e-4)
    assert row["rank_correlation"] >= 0.8
    assert rank_correlation([1, 2, 3, 4], [1, 2, 2, 5]) > 0.9 > rank_correlation([1, 2, 3], [3, 1, 2])


def test_the_cli_options_reach_the_edit_params():
    import argparse

    from engine.cli.edit import _edit_params, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plain = _edit_params(parser.parse_args(["-p", "x", "-i", "in.png"]))
    assert (plain.differential, plain.seam_fix) == (True, "auto")
    chosen = _edit_params(parser.parse_args(["-p", "x", "-i", "in.png", "--no_differential", "--seam_fix",
                                             "poisson+band"]))  # fmt: skip
    assert (chosen.differential, chosen.seam_fix) == (False, "poisson+band")
