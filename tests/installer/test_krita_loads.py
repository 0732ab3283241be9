"""Real Krita (5.1, 6 and 5.3, under xvfb-run) loads what install.py installed, and what Krita's own importer
extracted from the --zip archive, with a probe plugin beside it (tests/krita_install/) that reports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.installer.helpers import KRITA_IMPORTER, PLUGIN, REPO, home_env, run_install
from tests.krita_env import KritaInstall, krita_environment, run_gui

PROBE_DIR = REPO / "tests" / "krita_install" / "pykrita"


needs_xvfb = pytest.mark.skipif(
    shutil.which("xvfb-run") is None, reason="needs xvfb-run (apt-get install xvfb)"
)


def docker_id(clone_dir: Path) -> str:
    source = (clone_dir / "krita_plugin" / PLUGIN / "ui" / "docker.py").read_text()
    match = re.search(r'^DOCKER_ID\s*=\s*"([^"]+)"', source, re.M)
    assert match, "krita_plugin/blended_diffusion/ui/docker.py defines no DOCKER_ID"
    return match.group(1)


def run_krita_with_probe(home: Path, tmp_path: Path, krita: KritaInstall) -> dict:
    """Start the real ``krita`` on ``home`` with the probe plugin beside what is installed; its report."""
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    shutil.copy(PROBE_DIR / "bd_install_probe.desktop", pykrita)
    shutil.copytree(PROBE_DIR / "bd_install_probe", pykrita / "bd_install_probe")
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text(kritarc.read_text().replace("[python]\n", "[python]\nenable_bd_install_probe=true\n"))
    out = tmp_path / "probe.json"
    env = krita_environment(home_env(home))
    env["BD_PROBE_OUT"] = str(out)
    log = tmp_path / "krita.log"
    run_gui(krita, env, tmp_path, log)
    assert out.is_file(), "Krita never ran the probe plugin:\n" + log.read_text(errors="replace")[-3000:]
    report = json.loads(out.read_text())
    assert "error" not in report, report.get("error")
    return report


@needs_xvfb
def test_real_krita_loads_the_installed_plugin(clone, tmp_path, krita):
    """In Krita 5.1 and in Krita 6 (tests/conftest.py), the same installed files."""
    installed_plugin_loads(clone, tmp_path, krita)


@needs_xvfb
@pytest.mark.parametrize("krita", ["krita5.3"], indirect=True)
def test_krita_5_3_loads_the_installed_plugin(clone, tmp_path, krita):
    """Krita 5.3 (Qt5, Debian sid): the smoke test's load part (tests/krita/test_krita53_smoke.py)."""
    installed_plugin_loads(clone, tmp_path, krita)


def installed_plugin_loads(clone: Path, tmp_path: Path, krita: KritaInstall) -> None:
    home = tmp_path / "home"
    home.mkdir()
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = run_krita_with_probe(home, tmp_path, krita)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    # Loaded from the folder install.py filled, not from the source tree.
    assert report["modules"][PLUGIN] == str(pykrita / PLUGIN / "__init__.py")
    assert report["resolves"]["bridge"] == str(pykrita / "bridge" / "__init__.py")
    assert all(str(REPO) not in (path or "") for path in report["modules"].values())
    assert any(name.startswith(PLUGIN + ".") for name in report["extensions"]), report["extensions"]
    assert docker_id(clone) in report["dockers"], report["dockers"]
    actions = report["actions"]
    assert len(actions) == 9, actions
    assert actions["blended_diffusion_edit"] == ["Edit with Text…", "Ctrl+Alt+E"]
    assert actions["blended_diffusion_next"][1] == "Ctrl+Alt+."
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert report["engine_config"] == {"python": record["python"], "engine_root": record["engine_root"]}


@needs_xvfb
def test_real_krita_loads_the_plugin_imported_from_the_zip(clone, tmp_path, krita):
    """The zip route: Krita's importer (each Krita's own), the engine set up with --no-plugin, the bridge
    from _vendor."""
    importer_file = (krita.root.path if krita.root else Path("/")) / str(KRITA_IMPORTER).lstrip("/")
    if not importer_file.is_file():
        pytest.skip(f"Krita's importer not found at {importer_file}")
    home = tmp_path / "home"
    resources = home / ".local" / "share" / "krita"
    resources.mkdir(parents=True)
    archive = tmp_path / "blended_diffusion.zip"
    build = [sys.executable, str(clone / "install.py"), "--zip", str(archive)]
    subprocess.run(build, check=True, capture_output=True, timeout=120)
    # Krita's own importer as its command line runs it; Krita 6's wants Krita's i18n() in builtins.
    run_importer = (
        "import builtins, runpy, sys; builtins.i18n = getattr(builtins, 'i18n', lambda text, *args: text); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    importer = [sys.executable, "-c", run_importer, str(importer_file), str(archive), str(resources)]
    subprocess.run(importer, check=True, capture_output=True, timeout=120)
    (home / ".config").mkdir()
    # What Krita's Python Plugin Manager writes when the user ticks the imported plugin.
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=true\n")
    args = [
        "--no-plugin",
        "--no-venv",
        "--python",
        sys.executable,
        "--no-weights",
        "--no-first-edit",
        "--yes",
    ]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = run_krita_with_probe(home, tmp_path, krita)
    package = resources / "pykrita" / PLUGIN
    assert report["modules"][PLUGIN] == str(package / "__init__.py")
    assert report["resolves"]["bridge"] == str(package / "_vendor" / "bridge" / "__init__.py")
    assert docker_id(clone) in report["dockers"], report["dockers"]
    engine_root = home / ".local" / "share" / "blended-diffusion" / "engine"
    assert report["engine_config"]["engine_root"] == str(engine_root)
