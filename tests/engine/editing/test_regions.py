"""Regions (issue 39): several selections with their own prompts in one job, for both methods.

The regions' shares (shared/regions.py), the latent method's regional cross-attention (latent/regional.py),
the paper method's summed CLIP loss (paper/regional.py), and edit() with regions: one region is a plain
edit byte for byte, several keep every pixel outside their union, bad lists are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.editing.editor import edit
from engine.editing.latent.regional import (
    RegionalCrossAttention,
    RegionalPrompts,
    layer_side,
    regional_attention,
)
from engine.editing.shared.params import EditParams
from engine.editing.shared.ranking import score_candidates, score_regions
from engine.editing.shared.regions import MAX_REGIONS, Region, check_regions, region_weights, union_mask
from engine.errors import InputError
from engine.models import registry
from tests.engine.edit_scenes import quick_params


def _box(size: int, box) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def _scene(size: int = 40):
    image = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((4, 28, 12, 36), fill=(240, 240, 20))
    left = Region(_box(size, (2, 6, 17, 21)), "a red circle")
    right = Region(_box(size, (21, 6, 36, 21)), "a blue square")
    return image, left, right


@pytest.fixture(scope="module")
def toy_latent():
    from engine.models.loading import load_models

    return load_models("toy-latent", None, "cpu")


def _latent_params(**values) -> EditParams:
    defaults = registry.get_preset("toy-latent").edit_defaults
    base = {**defaults, "timestep_respacing": "10", "skip_timesteps": 2, "batch_size": 2, "iterations_num": 1}
    return EditParams(**{**base, "seed": 3, "precision": "fp32", **values})


def _pixels(result) -> list:
    return [np.asarray(c.image.convert("RGB")) for c in result.candidates]


# the regions' shares


def test_shares_add_up_to_one_overlaps_by_value_and_the_background_gets_the_rest() -> None:
    crops = np.zeros((2, 4, 4), np.float32)
    crops[0, :, :2] = 1.0  # left half
    crops[1, :, 1:3] = 0.5  # a half-strength band overlapping it in column 1
    weights = region_weights(crops, 4, "cpu")[:, 0]
    assert weights.shape == (3, 4, 4)
    assert torch.allclose(weights.sum(0), torch.ones(4, 4))
    assert torch.allclose(weights[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))  # region 1 alone
    assert torch.allclose(weights[:, 0, 1], torch.tensor([0.0, 1 / 1.5, 0.5 / 1.5]))  # overlap, normalised
    assert torch.allclose(weights[:, 0, 2], torch.tensor([0.5, 0.0, 0.5]))  # the band and the background
    assert torch.allclose(weights[:, 0, 3], torch.tensor([1.0, 0.0, 0.0]))  # outside: the background's


def test_a_layer_grid_is_found_from_its_query_count() -> None:
    assert [layer_side(8, n) for n in (64, 16, 4, 1)] == [8, 4, 2, 1]
    assert [layer_side(5, n) for n in (25, 9, 4)] == [5, 3, 2]  # odd sides round up, as strided convs
    with pytest.raises(ValueError, match="no square grid"):
        layer_side(8, 12)


def test_the_union_is_each_pixels_largest_value() -> None:
    a, b = np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)
    a[0, 0], a[1, 1], b[1, 1], b[2, 2] = 255, 40, 90, 10
    union = np.asarray(union_mask([Region(Image.fromarray(a), "x"), Region(Image.fromarray(b), "y")], (3, 3)))
    assert union.tolist() == [[255, 0, 0], [0, 90, 0], [0, 0, 10]]


def test_bad_region_lists_are_refused_by_name() -> None:
    image, left, right = _scene()
    with pytest.raises(InputError, match="at most 8 regions"):
        check_regions([left] * (MAX_REGIONS + 1), image.size)
    with pytest.raises(InputError, match=r"region 2 \('empty'\): its mask is empty"):
        check_regions([left, Region(Image.new("L", image.size), "empty")], image.size)
    with pytest.raises(InputError, match="region 1: mask size 8x8 differs"):
        check_regions([Region(Image.new("L", (8, 8), 255), "x")], image.size)
    with pytest.raises(InputError, match="region 2: the prompt must be text"):
        check_regions([left, Region(right.mask, 3)], image.size)  # type: ignore[arg-type]


def test_edit_refuses_a_mask_with_regions_and_invert_mask(tiny_models) -> None:
    image, left, right = _scene()
    with pytest.raises(InputError, match="either a mask or regions"):
        edit(image, left.mask, tiny_models, quick_params(), regions=[left, right])
    with pytest.raises(InputError, match="invert_mask does not apply to regions"):
        edit(image, None, tiny_models, quick_params(invert_mask=True), regions=[left, right])
    with pytest.raises(InputError, match="needs a mask or regions"):
        edit(image, None, tiny_models, quick_params())


# regional cross-attention


class _Echo:
    """A stand-in processor: its output is the chunk's mean token, for every query."""

    def __call__(self, attn, hidden, encoder_hidden_states=None, attention_mask=None, temb=None):
        if encoder_hidden_states is None:
            return hidden
        return encoder_hidden_states.mean(1, keepdim=True).expand(-1, hidden.shape[1], -1).clone()


def test_regional_cross_attention_weights_each_prompts_output_by_its_area() -> None:
    crops = np.zeros((1, 4, 4), np.float32)
    crops[0, :, 2:] = 1.0  # the region: the right half
    prompts = RegionalPrompts(crops, grid=4, tokens=2, device=torch.device("cpu"))
    layer = RegionalCrossAttention(_Echo(), prompts)
    background, region = torch.full((1, 2, 3), 1.0), torch.full((1, 2, 3), 5.0)
    cond = torch.cat([background, region], dim=1)
    uncond = torch.zeros(1, 4, 3)
    hidden = torch.zeros(2, 16, 3)
    out = layer(None, hidden, torch.cat([uncond, cond]))
    grid = out[1, :, 0].view(4, 4)
    assert torch.equal(grid[:, :2], torch.ones(4, 2)) and torch.equal(grid[:, 2:], torch.full((4, 2), 5.0))
    assert torch.equal(out[0], torch.zeros(16, 3))  # the unconditional row: its one prompt, once
    assert torch.equal(layer(None, hidden[:1], None), hidden[:1])  # self-attention passes through
    with pytest.raises(ValueError, match="6 tokens for 2 prompts of 2"):
        layer(None, hidden, torch.zeros(2, 6, 3))


def test_regional_attention_swaps_only_cross_attention_and_restores_it_after_an_error(toy_latent) -> None:
    unet = toy_latent.unet
    before = dict(unet.attn_processors)
    prompts = RegionalPrompts(np.ones((1, 8, 8), np.float32), 8, 77, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="boom"):
        with regional_attention(unet, prompts):
            inside = unet.attn_processors
            assert (
                {n for n, p in inside.items() if isinstance(p, RegionalCrossAttention)}
                == {n for n in before if ".attn2." in n}
                != set()
            )
            raise RuntimeError("boom")
    assert all(unet.attn_processors[n] is p for n, p in before.items())


# edits with regions


def test_one_region_is_a_plain_edit_byte_for_byte(tiny_models, toy_latent) -> None:
    image, left, _ = _scene()
    for models, params in ((tiny_models, quick_params(prompt="")), (toy_latent, _latent_params())):
        plain = edit(image, left.mask, models, EditParams(**{**params.to_dict(), "prompt": left.prompt}))
        region = edit(image, None, models, params, regions=[left])
        assert [c.seed for c in plain.candidates] == [c.seed for c in region.candidates]
        for a, b in zip(_pixels(plain), _pixels(region)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("method", ["paper", "latent"])
def test_two_regions_edit_both_in_one_job_and_keep_every_pixel_outside(
    method, tiny_models, toy_latent
) -> None:
    image, left, right = _scene()
    hidden = _box(40, (4, 28, 12, 36))  # a third region the user hid: not sent, so kept
    models, params = (
        (tiny_models, quick_params(prompt="")) if method == "paper" else (toy_latent, _latent_params())
    )
    calls = []
    hook = models.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        result = edit(image, None, models, params, regions=[left, right])
    finally:
        hook.remove()
    steps = 8 if method == "latent" else 4
    assert len(calls) == steps  # one diffusion: one UNet call a step for the whole batch
    assert any("2 regions" in note and "'a blue square'" in note for note in result.notes)
    union = np.asarray(union_mask([left, right], image.size)) > 0
    source, kept = np.asarray(image), np.asarray(hidden) > 0
    assert not (union & kept).any()
    for pixels in _pixels(result):
        assert np.array_equal(pixels[~union], source[~union])
        assert np.array_equal(pixels[kept], source[kept])
        for region in (left, right):  # both regions were edited
            inside = np.asarray(region.mask) > 0
            assert not np.array_equal(pixels[inside], source[inside])
    assert all(c.scores["combined"] is not None for c in result.candidates)


def test_the_paper_methods_region_loss_is_the_sum_of_each_regions_own(tiny_models) -> None:
    from engine.editing.paper.blended import ClipGuidance
    from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
    from tests.engine.edit_scenes import guidance_settings

    clip, size = tiny_models.clip, tiny_models.image_size
    x = torch.rand(2, 3, size, size) * 2 - 1
    masks = torch.zeros(2, 1, 1, size, size)
    masks[0, ..., : size // 2] = 1
    masks[1, ..., size // 2 :] = 1
    embeds = [clip.encode_text(["a red circle"]), clip.encode_text(["a blue square"])]
    squares = [(0, 0, size // 2), (size // 2, size // 2, size // 2)]
    augment = ExtendingAugmentations(clip.image_size, 1)
    settings = guidance_settings(range_lambda=0.0, clip_guidance_lambda=1.0)
    regions = list(zip(embeds, masks, squares))
    guidance = ClipGuidance(clip, embeds[0], augment, settings, regions=regions)
    loss = guidance.loss(x, x, 1.0, mask=masks.amax(0), background=x, generators=[])
    expected = sum(
        clip_distances(clip, (x * m)[..., t : t + s, left : left + s], e, augment).sum()
        for e, m, (t, left, s) in regions
    )
    assert torch.allclose(loss, expected)


def test_region_scores_are_each_regions_own_averaged(tiny_models) -> None:
    clip, size = tiny_models.clip, tiny_models.image_size
    results = torch.rand(3, 3, size, size) * 2 - 1
    masks = torch.zeros(2, 1, size, size)
    masks[0, :, :, :10], masks[1, :, :, 10:] = 1, 1
    embeds = [clip.encode_text(["a red circle"]), clip.encode_text(["a blue square"])]
    scores = score_regions(clip, results, masks, embeds)
    each = [score_candidates(clip, results, masks[k : k + 1], e) for k, e in enumerate(embeds)]
    for i, score in enumerate(scores):
        assert score["combined"] == pytest.approx((each[0][i]["combined"] + each[1][i]["combined"]) / 2)
    one = score_regions(clip, results, masks, [embeds[0], None])  # a region without a prompt: not scored
    assert [s["combined"] for s in one] == pytest.approx([s["combined"] for s in each[0]])
    assert score_regions(clip, results, masks, [None, None])[0]["combined"] is None


def test_through_the_unet_each_regions_gradient_moves_only_its_own_pixels(tiny_models) -> None:
    from engine.editing.paper.blended import ClipGuidance
    from engine.editing.shared.augment import ExtendingAugmentations, clip_distances
    from tests.engine.edit_scenes import guidance_settings

    clip, size = tiny_models.clip, tiny_models.image_size
    blur = torch.nn.Conv2d(3, 3, 5, padding=2)  # a stand-in UNet: every output pixel sees its neighbours
    masks = torch.zeros(2, 1, 1, size, size)
    masks[0, ..., 2:10, 2:10], masks[1, ..., 12:20, 12:20] = 1, 1
    embeds = [clip.encode_text(["a red circle"]), clip.encode_text(["a blue square"])]
    regions = list(zip(embeds, masks, [(0, 0, size), (0, 0, size)]))
    augment = ExtendingAugmentations(clip.image_size, 1)
    settings = guidance_settings(range_lambda=0.0, clip_guidance_lambda=1.0)
    guidance = ClipGuidance(clip, embeds[0], augment, settings, regions=regions)
    x = torch.rand(1, 3, size, size) * 2 - 1
    _, gradient = guidance.predict(
        lambda x_t, t: {"pred_xstart": blur(x_t)},
        x,
        None,
        0.5,
        mask=masks.amax(0),
        background=x,
        generators=[],
    )
    union = masks.amax(0).expand_as(gradient) > 0
    assert torch.equal(gradient[~union], torch.zeros_like(gradient[~union]))
    expected = torch.zeros_like(x)
    for embed, mask, (top, left, side) in regions:  # each region's own gradient, inside its own mask
        leaf = x.clone().requires_grad_(True)
        x_in = blur(leaf) * 0.5 + leaf * 0.5
        loss = clip_distances(clip, (x_in * mask)[..., top : top + side, left : left + side], embed, augment)
        expected -= mask * torch.autograd.grad(loss.sum(), leaf)[0]
    assert torch.allclose(gradient, expected, atol=1e-6)
    assert (gradient[union] != 0).any()


def test_sdxls_pooled_embedding_is_the_background_prompts_or_the_regions_mean() -> None:
    from engine.editing.latent.regional import regional_conditionings
    from engine.models.latent import Conditioning

    class Encoder:  # SDXL's shape of conditioning: states and the added kwargs
        def encode_prompt(self, prompt: str) -> Conditioning:
            value = float(len(prompt))
            added = {"text_embeds": torch.full((1, 4), value), "time_ids": torch.ones(1, 6)}
            return Conditioning(torch.full((1, 3, 2), value), added)

    encoder = Encoder()
    empty = encoder.encode_prompt("")
    cond, uncond = regional_conditionings(encoder, ["ab", "abcd"], empty)
    assert cond.states[0, :, 0].tolist() == [0.0] * 3 + [2.0] * 3 + [4.0] * 3  # background, then regions
    assert torch.equal(cond.added["text_embeds"], torch.full((1, 4), 3.0))  # the regions' mean
    assert torch.equal(uncond.states, torch.zeros(1, 9, 2))
    assert torch.equal(uncond.added["text_embeds"], torch.zeros(1, 4))
    cond, _ = regional_conditionings(encoder, ["ab", ""], empty, encoder.encode_prompt("a lake"))
    assert torch.equal(cond.added["text_embeds"], torch.full((1, 4), 6.0))  # the background prompt's
    assert cond.states[0, 6:, 0].tolist() == [0.0] * 3  # a region without a prompt: the empty one's
