"""Issue 31's toy rows: the edge seam metric, the thin-bar cases and the rows runner (toyworld.rows)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from toyworld.scenes import edit_case, shape_colour_rgb
from toyworld.seam import border_pairs, coloured, edge_seam, summary
from toyworld.thin import WIDTHS, region_change, thin_case


def _square_mask(size: int = 16, box: tuple = (4, 4, 12, 12)) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    return mask


def _gradient(size: int = 16) -> np.ndarray:
    ramp = np.linspace(40, 200, size, dtype=np.float32)
    return np.repeat(np.broadcast_to(ramp[None, :, None], (size, size, 1)), 3, axis=2).astype(np.uint8)


def test_border_pairs_of_a_square():
    ins, outs = border_pairs(_square_mask())
    assert len(ins) == len(outs) == 4 * 8  # 8 pixels a side, each with one outside neighbour
    mask = _square_mask().reshape(-1)
    assert (mask[ins] == 255).all() and (mask[outs] == 0).all()


def test_seamless_edit_scores_zero():
    source = _gradient()
    result = source.copy()
    result[6:10, 6:10] = (200, 30, 30)  # an object well inside the selection: no pixel at the border changes
    seam = edge_seam(source, result, _square_mask())
    assert seam.seam == pytest.approx(0.0) and seam.background == pytest.approx(0.0)
    assert seam.pairs == seam.background_pairs == 32


def test_hard_step_scores_its_height():
    source = np.full((16, 16, 3), 100, np.uint8)
    result = source.copy()
    result[4:12, 4:12] = 140  # a grey (background-like) fill 40 levels off: a visible seam
    seam = edge_seam(source, result, _square_mask())
    assert seam.seam == pytest.approx(40.0) and seam.background == pytest.approx(40.0)


def test_source_step_is_subtracted_and_objects_at_the_border_are_told_apart():
    source = _gradient()
    result = source.copy()
    result[4:12, 4:12] = shape_colour_rgb("blue")  # an object filling the selection edge to edge
    seam = edge_seam(source, result, _square_mask())
    assert seam.seam > 20.0
    assert seam.background is None and seam.background_pairs == 0  # every inside border pixel is coloured
    assert coloured(np.array([shape_colour_rgb("red"), (128, 128, 128)], np.uint8)).tolist() == [True, False]


def test_seam_accepts_pil_and_summary_skips_none():
    image = Image.fromarray(_gradient(), "RGB")
    assert edge_seam(image, image, Image.fromarray(_square_mask(), "L")).seam == 0.0
    assert summary([1.0, None, 3.0])["count"] == 2 and summary([None])["mean"] is None
    assert summary([float(v) for v in range(11)])["p90"] == pytest.approx(9.0)


@pytest.mark.parametrize("seed", range(30, 90))
def test_thin_case_is_a_thin_bar_over_background(seed):
    case = thin_case(seed)
    again = thin_case(seed)
    assert case.box == again.box and case.prompt == again.prompt
    assert np.array_equal(np.asarray(case.image), np.asarray(again.image))
    x0, y0, x1, y1 = case.box
    assert min(x1 - x0, y1 - y0) in WIDTHS and 16 <= max(x1 - x0, y1 - y0) <= 24
    mask = np.asarray(case.mask)
    assert (mask[y0:y1, x0:x1] == 255).all() and (mask > 0).sum() == (x1 - x0) * (y1 - y0)
    assert not coloured(np.asarray(case.image)[y0:y1, x0:x1]).any()  # no shape pixel in the bar
    # 2-3 cells of the 16x16 latent grid (nearest neighbour: cell i takes pixel 2i)
    cells = mask[::2, ::2] > 0
    assert min(np.any(cells, axis=0).sum(), np.any(cells, axis=1).sum()) in (2, 3)


def test_thin_cases_differ_from_edit_cases():
    assert thin_case(30).box != edit_case(30).box
    assert region_change(thin_case(30).image, thin_case(30).image, thin_case(30).box) == 0.0


def test_rows_runner_one_scene_and_merge(tmp_path, capsys):
    from toyworld import rows

    out = tmp_path / "rows.json"
    assert rows.main(["--rows", "toy-latent", "--scenes", "1", "--json", str(out)]) == 0
    more = ["--rows", "thin-latent-shrink", "--thin-scenes", "1", "--json", str(out), "--merge"]
    assert rows.main(more) == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"toy-latent", "thin-latent-shrink"} and len(report["commands"]) == 2
    main, thin = report["rows"]["toy-latent"], report["rows"]["thin-latent-shrink"]
    assert main["trials"] == thin["trials"] == 4 and main["background_exact"] and thin["background_exact"]
    assert main["settings"]["cases"] == "main" and thin["params"]["mask_shrink"] is True
    assert thin["thin"]["trials"] == 4 and "guided_both" not in thin
    assert main["cpu_seconds_per_candidate"] > 0 and main["seam"]["all"]["count"] == 4
    assert report["machine"] and report["torch"]
    assert len(main["candidates"]) == 4 and len(main["candidates"][0]) == len(report["trial_fields"])
    assert main["candidates"][0][0] == 30 and '"candidates": [\n' in out.read_text()  # a trial a line
    assert "| toy-latent |" in capsys.readouterr().out
