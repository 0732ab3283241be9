"""Full-resolution detail in real Krita through the installed plugin's API, on the toy engine: a 1024x768
document with a 600 px soft selection. With detail on the candidate layers hold document-resolution
pixels, everything outside the selection is unchanged, and the new shape's edges are narrower than with
detail off; a cancel during the detail stage adds nothing and the engine edits again at once.
detail/scenarios.py runs in Krita (tests/krita_session.py) in a throw-away HOME."""

import re
from pathlib import Path

import numpy as np
import pytest

from tests.krita_env import HOST_KRITA, KRITARUNNER, scenario_environment
from tests.krita_session import Scenario, run_session

W, H = 1024, 768

pytestmark = pytest.mark.skipif(
    KRITARUNNER is None, reason="kritarunner is not installed (apt-get install krita python3-pyqt5)"
)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The detail scenario's result and the HOME it wrote the layers' pixels into."""
    home = tmp_path_factory.mktemp("krita-detail-home")
    env = scenario_environment(
        home,
        "toy",
        BD_ENGINE_LOG=str(home / "engine.log"),
        BLENDED_DIFFUSION_STEP_TIMES=str(home / "step_times.json"),
    )
    scenario = Scenario("detail", "tests.krita.detail.scenarios:scenario_detail", "real")
    return run_session(HOST_KRITA, env, home, [scenario]), home


def _composite(home: Path, name: str) -> np.ndarray:
    """The candidate layer (RGBA) over the source, as Krita shows it."""
    source = np.frombuffer((home / "source.rgba").read_bytes(), np.uint8).reshape(H, W, 4)[..., :3]
    layer = np.frombuffer((home / f"{name}.rgba").read_bytes(), np.uint8).reshape(H, W, 4).astype(np.float64)
    alpha = layer[..., 3:] / 255.0
    return np.round(layer[..., :3] * alpha + source * (1 - alpha)).astype(np.uint8)


def test_detail_layers_at_document_resolution_background_unchanged(session):
    result = session[0]["detail"]
    for detail in ("off", "on"):
        steps = [s for s, _ in result[detail]["progress"]]
        assert steps == sorted(steps) and steps[-1] == result[detail]["progress"][-1][1]
        assert len(result[detail]["bounds"]) == 2
    on = result["on"]
    assert len(on["candidates"]) == 2
    for candidate in on["candidates"]:
        assert candidate["outside_bad"] == 0 and candidate["inside_changed"] > 0
        assert candidate["bytes"] == W * H * 4
    assert on["projection_outside_bad"] == 0
    # the patch covers the 600 px selection at the document's resolution, not the model's 32 px
    assert all(box[2] >= 590 and box[3] >= 590 for box in on["boxes"]), on["boxes"]
    assert any(note.startswith("full-resolution detail: ") for note in on["notes"]), on["notes"]
    # the docker's estimate counts the stage's tiles from the selection's bounds read through Krita: at
    # least the engine's (a soft ellipse: the engine skips the corner tiles that miss it)
    from blended_diffusion.estimate import detail_tiles

    bounds, width, height = result["extent"]
    mask = np.frombuffer((session[1] / "mask.raw").read_bytes(), np.uint8).reshape(H, W)
    ys, xs = np.nonzero(mask)
    assert (tuple(bounds), width, height) == ((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), W, H)
    engine_tiles = int(re.search(r"\((\d+) tiles x", " ".join(on["notes"])).group(1))
    assert engine_tiles <= detail_tiles(tuple(bounds), width, height, 32) <= 1.4 * engine_tiles
    assert on["progress"][-1][1] > result["off"]["progress"][-1][1]  # the stage's tile-steps counted


def test_detail_narrows_the_new_shapes_edges(session):
    from toyworld.detail_eval import edge_width

    results, home = session
    assert results["detail"], "the scenario wrote the layers' pixels"  # or failed here, saying why
    mask = np.frombuffer((home / "mask.raw").read_bytes(), np.uint8).reshape(H, W)
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    widths = {}
    for detail in ("off", "on"):
        found = [edge_width(_composite(home, f"{detail}{i}")[box], "red") for i in range(2)]
        assert None not in found, (detail, found)
        widths[detail] = float(np.mean(found))
    assert widths["on"] < widths["off"], widths


def test_cancel_during_detail_adds_nothing_and_the_engine_edits_again(session):
    result = session[0]["detail"]
    assert result["cancelled"][0] == "CancelledError", result["cancelled"]
    assert max(result["cancel_steps"]) > 8  # the cancel came inside the detail stage
    assert result["cancel_unchanged"]
    assert result["after_cancel_candidates"] == 1


def test_docker_estimate_follows_the_selection(session):
    """Krita sends no signal when the selection changes: the docker's timer polls its bounds, and the
    detail stage's added time follows them (a 600 px selection, then a 160 px one)."""
    seen = session[0]["detail"]["docker"]
    assert seen["timer"][0] and 0 < seen["timer"][1] <= 2000
    assert "for full-resolution detail" in seen["large"], seen
    assert seen["unpolled"] == seen["large"]  # nothing changed before the poll ran
    assert seen["small"] != seen["large"] and "for full-resolution detail" in seen["small"], seen
    assert "full-resolution" not in seen["off"], seen
