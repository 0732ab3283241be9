"""installer.manifest: what an install wrote or moved aside, recorded as it goes, and the copying it keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from installer.errors import InstallError
from installer.manifest import MANIFEST_VERSION, Manifest, install_file, install_tree


def test_claim_moves_a_foreign_path_aside_and_records_it(tmp_path):
    manifest = Manifest(tmp_path / "data" / "install-manifest.json")
    foreign = tmp_path / "krita" / "plugin.desktop"
    foreign.parent.mkdir()
    foreign.write_text("someone else's\n")
    install_file(manifest, b"ours\n", foreign)
    assert foreign.read_text() == "ours\n"
    backup = manifest.replaced[str(foreign)]
    assert Path(backup).read_text() == "someone else's\n" and str(foreign) in manifest.owned
    install_file(manifest, b"ours again\n", foreign)  # already ours: nothing more is moved aside
    assert list(manifest.replaced) == [str(foreign)] and manifest.owned.count(str(foreign)) == 1
    saved = Manifest.load(manifest.path)
    assert (saved.owned, saved.replaced) == (manifest.owned, manifest.replaced)


def test_ensure_dir_records_the_folders_it_made_top_down(tmp_path):
    manifest = Manifest(tmp_path / "install-manifest.json")
    manifest.ensure_dir(tmp_path / "a" / "b" / "c")
    assert manifest.created_dirs == [
        str(tmp_path / "a"),
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a" / "b" / "c"),
    ]
    assert json.loads(manifest.path.read_text())["created_dirs"] == manifest.created_dirs
    manifest.ensure_dir(tmp_path / "a" / "b")
    assert len(manifest.created_dirs) == 3


@pytest.mark.parametrize("content", ["not json", json.dumps({"version": MANIFEST_VERSION + 1}), "[]"])
def test_a_manifest_it_does_not_understand_is_refused(tmp_path, content):
    path = tmp_path / "install-manifest.json"
    path.write_text(content)
    with pytest.raises(InstallError, match=str(path)):
        Manifest.load(path)
    assert path.read_text() == content


def test_install_tree_replaces_the_target_without_caches(tmp_path):
    source = tmp_path / "src"
    (source / "__pycache__").mkdir(parents=True)
    (source / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
    (source / "m.py").write_text("new\n")
    (source / "old.pyc").write_bytes(b"x")
    target = tmp_path / "out" / "pkg"
    target.mkdir(parents=True)
    (target / "stale.py").write_text("stale\n")
    manifest = Manifest(tmp_path / "data" / "install-manifest.json")
    install_tree(manifest, source, target)
    assert sorted(p.name for p in target.iterdir()) == ["m.py"]
    assert not (tmp_path / "out" / ".pkg.installing").exists()
    assert (tmp_path / "data" / "replaced" / "000-pkg" / "stale.py").read_text() == "stale\n"
