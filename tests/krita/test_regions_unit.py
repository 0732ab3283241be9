"""The plugin's regions as plain data (issue 39): masks named by their prompts, the job's square around their
union, and the request that carries them to the bridge client (More keeping them: regions/ in real Krita)."""

import io

import pytest
from blended_diffusion import editing, errors, pixels, regions
from PIL import Image


def _context(bbox, width, height):
    from bridge.geometry import context_box

    return context_box(bbox, width, height)


def _mask(w, h, box, value=255):
    x0, y0, x1, y1 = box
    return bytes(value if x0 <= x < x1 and y0 <= y < y1 else 0 for y in range(h) for x in range(w))


def test_a_mask_named_by_krita_takes_the_dockers_prompt():
    assert regions.region_prompt(" a red kite ", "sky") == "a red kite"
    for name in ("Selection Mask", "selection mask 3", "Selection Mask2"):
        assert regions.region_prompt(name, " a calm sky ") == "a calm sky", name
    spec = regions.RegionSpec("7", "Selection Mask 2", False)
    assert (
        regions.region_prompt(spec.name, "x") == "x"
        and regions.used([spec, regions.RegionSpec("8", "a", True)])[0].uid == "8"
    )
    assert regions.label(["a red kite", ""]) == "a red kite | (background)"


def test_the_square_is_around_the_union_and_the_union_is_each_pixels_largest():
    w, h = 60, 40
    left, right = _mask(w, h, (5, 10, 15, 20), 200), _mask(w, h, (12, 12, 30, 25), 90)
    region, union, crops = regions.plan_regions([("a", "a kite", left), ("b", "", right)], w, h, _context)
    x, y, rw, rh = region
    assert x <= 5 and y <= 10 and x + rw >= 30 and y + rh >= 25  # both masks inside
    assert [p for p, _ in crops] == ["a kite", ""]
    assert crops[0][1] == pixels.crop(left, w, h, 1, region)
    assert union == bytes(map(max, crops[0][1], crops[1][1]))
    assert max(union) == 200 and 90 in union


def test_an_empty_mask_or_too_many_are_refused_by_name():
    w, h = 20, 20
    full = _mask(w, h, (2, 2, 8, 8))
    with pytest.raises(errors.EmptyRegionError, match="'a calm sky' does not cover any pixel"):
        regions.plan_regions(
            [("a kite", "a kite", full), ("a calm sky", "a calm sky", bytes(w * h))], w, h, _context
        )
    with pytest.raises(errors.TooManyRegionsError, match="9 visible selection masks: .* at most 8"):
        regions.plan_regions([("m", "m", full)] * 9, w, h, _context)


class RegionsClient:
    def __init__(self, reply):
        self.reply, self.sent = reply, None

    def edit(self, params, image_png, mask_png, init_png=None, on_progress=None, cancel=None, regions=None):
        self.sent = dict(params=params, mask=mask_png, regions=regions)
        return self.reply


def test_a_regions_request_sends_each_mask_with_its_prompt_and_no_mask():
    union = bytes([0, 255, 120, 0] * 4)
    parts = [("a kite", bytes([0, 255, 0, 0] * 4)), ("a balloon", bytes([0, 0, 120, 0] * 4))]
    request = editing.EditRequest((3, 4, 4, 4), bytes(64), union, {"seed": 1, "prompt": ""}, regions=parts)
    patch = bytes([9, 9, 9, 255]) * 16
    reply = {
        "candidates": [{"rank": 1, "seed": 1, "box": [0, 0, 4, 4], "png": pixels.encode_png(4, 4, patch, 4)}]
    }
    client = RegionsClient(reply)
    response = editing.execute(request, client)
    assert client.sent["mask"] is None
    assert [prompt for _png, prompt in client.sent["regions"]] == ["a kite", "a balloon"]
    assert Image.open(io.BytesIO(client.sent["regions"][1][0])).tobytes() == parts[1][1]
    assert response.candidates[0].rgba[3::4] == union  # a candidate covers the union at most
    assert editing.request_label(request, "sky") == "a kite | a balloon"
    assert editing.request_label(editing.EditRequest((0, 0, 1, 1), bytes(4), b"\xff", {}), "sky") == "sky"


def test_a_regions_round_says_its_regions_and_background_prompt():
    from blended_diffusion import rounds

    params = {"prompt": "a calm lake", "seed": 4, "timestep_respacing": "50", "skip_timesteps": 20}
    line = rounds.Round.from_params(1, rounds.EDIT, params, regions=["a red kite", ""]).describe()
    assert line.startswith(
        "Round 1 (edit), regions 'a red kite | (background)', background prompt 'a calm lake'"
    )
    assert "prompt 'a calm lake', seed 4" in rounds.Round.from_params(1, rounds.EDIT, params).describe()
