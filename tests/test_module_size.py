"""No module over 500 lines anywhere in the tree, tests included (docs/design.md): past that a file holds
more than one part and a reader cannot see its shape."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def python_files() -> List[Path]:
    """The tree's Python files as git sees them (tracked, and untracked ones it does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def long_modules(paths: List[Path], limit: int = MAX_LINES) -> List[str]:
    found = []
    for path in paths:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def test_no_module_is_over_500_lines() -> None:
    paths = python_files()
    assert len(paths) > 200  # the whole tree was read, not an empty listing
    found = long_modules(paths)
    assert not found, "\n".join(found)


def test_the_check_sees_a_long_module() -> None:
    readme = ROOT / "README.md"
    lines = len(readme.read_text(encoding="utf-8").splitlines())
    assert long_modules([readme], limit=lines - 1) == [f"README.md: {lines} lines"]
    assert long_modules([readme], limit=lines) == []
