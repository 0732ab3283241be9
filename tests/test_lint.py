"""The code base stays ruff-clean (the rules are in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean() -> None:
    venv_ruff = Path(sys.executable).with_name("ruff")
    ruff = str(venv_ruff) if venv_ruff.exists() else shutil.which("ruff") or "ruff"
    result = subprocess.run(
        [ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugin_and_bridge_import_no_third_party_packages() -> None:
    """Krita's Python has no numpy or torch: the plugin and the bridge must not import them."""
    forbidden = ("numpy", "torch", "PIL", "open_clip", "kornia", "lpips")
    offenders = []
    for folder in ("krita_plugin", "bridge"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                words = line.strip().split()
                if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in forbidden:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
