"""installer.kritarc: the plugin's line in kritarc, set on install and restored on uninstall."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import pytest

from installer import kritarc
from installer.errors import InstallError
from installer.layout import Layout, make_layout
from installer.manifest import Manifest


@pytest.mark.parametrize(
    "before, after, restored_after_krita_rewrite",
    [
        ("", "[python]\nenable_blended_diffusion=true\n", "[Later]\nc=3\n"),
        (
            "[General]\na=1",
            "[General]\na=1\n\n[python]\nenable_blended_diffusion=true\n",
            "[General]\na=1\n\n[Later]\nc=3\n",
        ),
        (
            "[python]\nenable_x=true\n\n[W]\nb=2\n",
            "[python]\nenable_x=true\nenable_blended_diffusion=true\n\n[W]\nb=2\n",
            "[python]\nenable_x=true\n\n[W]\nb=2\n[Later]\nc=3\n",
        ),
        (
            "[python]\r\nenable_blended_diffusion=false\r\nenable_x=true\r\n",
            "[python]\r\nenable_blended_diffusion=true\r\nenable_x=true\r\n",
            "[python]\r\nenable_blended_diffusion=false\r\nenable_x=true\r\n[Later]\nc=3\n",
        ),
    ],
)
def test_kritarc_line_is_set_and_restored(before, after, restored_after_krita_rewrite):
    text, previous, added = kritarc.enable_in_kritarc(before)
    assert text == after
    assert kritarc.enable_in_kritarc(text)[0] == text  # a rerun changes nothing
    # Krita rewrites kritarc with settings of its own; undoing keeps those and restores only our line.
    rewritten = text + "[Later]\nc=3\n"
    assert kritarc.restore_in_kritarc(rewritten, previous, added) == restored_after_krita_rewrite


def layout_with_kritarc(tmp_path: Path, text: Optional[bytes] = None) -> Layout:
    args = argparse.Namespace(
        krita_dir=None, kritarc=str(tmp_path / "kritarc"), weights_dir=None, venv=None, engine_from_repo=False
    )
    found = make_layout(args, {"HOME": str(tmp_path / "home")}, "linux")
    if text is not None:
        found.kritarc.write_bytes(text)
    return found


def test_enable_then_restore_gives_back_the_exact_bytes(tmp_path):
    before = b"[General]\r\na=1\r\n[python]\r\nenable_blended_diffusion=false\r\n"
    layout = layout_with_kritarc(tmp_path, before)
    manifest = Manifest(layout.manifest)
    kritarc.enable_plugin(manifest, layout)
    assert layout.kritarc.read_bytes() == before.replace(b"=false", b"=true")
    record = Manifest.load(layout.manifest).kritarc
    assert record["existed"] and record["previous_line"] == "enable_blended_diffusion=false"
    kritarc.enable_plugin(manifest, layout)  # a rerun keeps the first install's record of what was there
    assert manifest.kritarc["previous_line"] == "enable_blended_diffusion=false"
    kritarc.restore_kritarc(manifest.kritarc)
    assert layout.kritarc.read_bytes() == before


def test_a_kritarc_the_install_made_goes_on_restore(tmp_path):
    layout = layout_with_kritarc(tmp_path)
    manifest = Manifest(layout.manifest)
    manifest.ensure_dir(layout.data_dir)  # as install.py does before its steps
    kritarc.enable_plugin(manifest, layout)
    assert layout.kritarc.read_text() == "[python]\nenable_blended_diffusion=true\n"
    kritarc.restore_kritarc(manifest.kritarc)
    assert not layout.kritarc.exists()


def test_a_kritarc_that_is_not_utf8_is_refused_and_left_alone(tmp_path):
    before = b"[General]\nname=\xff\xfe\n"
    layout = layout_with_kritarc(tmp_path, before)
    with pytest.raises(InstallError, match="not UTF-8"):
        kritarc.enable_plugin(Manifest(layout.manifest), layout)
    assert layout.kritarc.read_bytes() == before and not layout.manifest.exists()
