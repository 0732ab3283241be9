"""Krita's own Undo takes an extension's canvas growth back, an edit's group in one step, a More round in
two, Accept in two (needs the GUI: undo lives on a view).

A test-only plugin (pykrita/bd_undo_probe beside this file) runs inside ``xvfb-run krita``: it grows a
canvas through ``api.apply_extend``, puts an edit's candidates and a More round into a document, and
triggers Krita's Undo action until the layer stack is as before each."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.krita_env import krita_environment, run_gui

ROOT = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).resolve().parent / "pykrita"


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (apt-get install xvfb)")
def test_krita_undo_takes_the_canvas_growth_back(tmp_path, krita):
    """In Krita 5.1 and Krita 6 (tests/conftest.py)."""
    home = tmp_path / "home"
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    shutil.copytree(PROBE, pykrita)
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "kritarc").write_text("[python]\nenable_bd_undo_probe=true\n")
    out = tmp_path / "undo.json"
    env = krita_environment(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        BD_UNDO_OUT=str(out),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "krita_plugin")]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    run_gui(krita, env, tmp_path, tmp_path / "krita.log")
    log = tmp_path / "krita.log"
    assert out.is_file(), "Krita never ran the undo probe:\n" + log.read_text(errors="replace")[-3000:]
    report = json.loads(out.read_text())
    assert "error" not in report, report.get("error")
    assert report["size_after_extend"] == [25, 13] and report["layer_at_offset"]
    assert report["group"] == "BD: sky"
    sizes = report["sizes_while_undoing"]
    assert sizes[-1] == [20, 10], sizes  # undo reached the canvas change and took it back
    assert sizes.count([20, 10]) == 1 and all(size == [25, 13] for size in sizes[:-1])
    assert report["layer_back"], "the layer's pixels are back at their old place"
    assert report["layers_after_undo"] == report["layers_before"]

    rounds = report["rounds"]
    assert rounds["undo_edit_alone"] == 1 and rounds["redo_edit"], "an edit's candidates: one undo step"
    assert len(rounds["after_more"][0][1]) == 4
    assert rounds["undo_more_steps"] == 2, "a More round: two steps (its group added, the old removed)"
    assert rounds["paint_kept"] == ["#3 match 38%"], "paint on a candidate layer survives a round"
    assert rounds["followed"] == [2, 1, ["#1 match 54%", "#2 match 38%"]], "the outcome follows Undo"
    assert rounds["undo_accept_steps"] == 2, "Accept: two steps (the layer added, the group removed)"
    assert rounds["undo_edit_steps"] == 1, "no invisible undo steps are left behind"
