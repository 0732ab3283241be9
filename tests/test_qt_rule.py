"""One source for Krita 5 (PyQt5) and Krita 6 (PyQt6): the Qt rule of the plugin (issue 30).

- Only ``blended_diffusion/qt.py`` imports PyQt; every other plugin module, scenario script and script run
  inside Krita takes Qt names from it (the install probe alone picks its own binding, by the same rule, so
  that it does not load the plugin it is checking).
- Every Qt attribute used through a class name (``Qt.AlignmentFlag.AlignCenter``, ``QMessageBox.Icon``,
  ``QTimer.singleShot``) exists in PyQt6, which has only scoped enum names, and in PyQt5 5.15 (Debian's, the
  one Krita 5 uses), so an unscoped name fails here rather than in a Krita 6 user's docker.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "krita_plugin" / "blended_diffusion"
QT_MODULE = PLUGIN / "qt.py"
INSIDE_KRITA = [
    *sorted(PLUGIN.rglob("*.py")),
    *sorted((ROOT / "tests" / "krita").glob("scenario_*.py")),
    *sorted((ROOT / "tests" / "krita").glob("*/scenarios.py")),
    ROOT / "tests" / "krita" / "fake_engine.py",
    *sorted((ROOT / "tests").glob("krita_*/pykrita/*/__init__.py")),
    *sorted((ROOT / "tests" / "krita").glob("*/pykrita/*/__init__.py")),
    *sorted((ROOT / "scripts").glob("krita_*.py")),
]
OWN_BINDING = {QT_MODULE, ROOT / "tests" / "krita_install" / "pykrita" / "bd_install_probe" / "__init__.py"}
QT_SOURCES = {"qt", "blended_diffusion.qt"}  # `from ..qt import X`, `from blended_diffusion.qt import X`


def _imports(tree: ast.AST) -> Iterator[Tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node.lineno


def test_only_the_qt_module_imports_pyqt() -> None:
    offenders = []
    for path in INSIDE_KRITA:
        if path in OWN_BINDING:
            continue
        for module, line in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module.split(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip"):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not offenders, "import Qt names from blended_diffusion.qt instead:\n" + "\n".join(offenders)


def _qt_names(tree: ast.AST) -> Set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in QT_SOURCES:
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _chain(node: ast.Attribute) -> List[str]:
    parts: List[str] = []
    current: ast.AST = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if isinstance(current, ast.Name):
        parts.append(current.id)
        return parts[::-1]
    return []


def qt_attribute_uses() -> Dict[str, List[str]]:
    """Every ``Name.attr[.attr...]`` rooted at a name from the Qt module -> where it is used."""
    qt_tree = ast.parse(QT_MODULE.read_text())
    qt_names = {
        t.id for n in qt_tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    uses: Dict[str, List[str]] = {}
    for path in INSIDE_KRITA:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _qt_names(tree) & qt_names
        outermost: Set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                outermost.add(id(node.value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in outermost:
                chain = _chain(node)
                if len(chain) >= 2 and chain[0] in imported:
                    uses.setdefault(".".join(chain), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return uses


RESOLVER = """
import json, sys
binding = sys.argv[1]
mods = __import__(binding, fromlist=["QtCore", "QtGui", "QtWidgets"])
names = {}
for sub in ("QtCore", "QtGui", "QtWidgets"):
    names.update(vars(getattr(mods, sub)))
missing = []
for chain in json.loads(sys.stdin.read()):
    parts = chain.split(".")
    obj = names.get(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part, None) if obj is not None else None
    if obj is None:
        missing.append(chain)
print(json.dumps(missing))
"""


def _missing_in(python: str, binding: str, chains: List[str]) -> List[str]:
    proc = subprocess.run(
        [python, "-c", RESOLVER, binding],
        input=json.dumps(chains),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _report(missing: List[str], uses: Dict[str, List[str]]) -> str:
    return "\n".join(f"{chain} ({', '.join(uses[chain][:3])})" for chain in missing)


def test_qt_attribute_uses_are_found() -> None:
    """The scan itself sees the scoped enums the docker uses (it would pass vacuously otherwise)."""
    uses = qt_attribute_uses()
    assert "Qt.AlignmentFlag.AlignCenter" in uses
    assert "QMessageBox.StandardButton.Yes" in uses
    assert not any(chain == "Qt.AlignCenter" for chain in uses)


def test_every_qt_name_exists_in_pyqt6() -> None:
    pytest.importorskip(
        "PyQt6.QtWidgets", reason="PyQt6 is in requirements/dev.txt: run_tests.py installs it"
    )
    uses = qt_attribute_uses()
    missing = _missing_in(sys.executable, "PyQt6", sorted(uses))
    assert not missing, "not in PyQt6 (use the scoped name):\n" + _report(missing, uses)


def _system_pyqt5_python() -> str:
    for python in ("/usr/bin/python3", shutil.which("python3") or ""):
        if (
            python
            and subprocess.run([python, "-c", "import PyQt5.QtWidgets"], capture_output=True).returncode == 0
        ):
            return python
    return ""


def test_every_qt_name_exists_in_pyqt5() -> None:
    """Against the PyQt5 Krita 5 runs with (Debian's python3-pyqt5, installed with Krita)."""
    python = _system_pyqt5_python()
    if not python:
        pytest.skip("no Python with PyQt5 here (apt-get install python3-pyqt5, as .ci/run does)")
    uses = qt_attribute_uses()
    missing = _missing_in(python, "PyQt5", sorted(uses))
    assert not missing, "not in PyQt5 5.15:\n" + _report(missing, uses)


def test_the_rule_catches_an_unscoped_enum(tmp_path: Path) -> None:
    """The resolver rejects what PyQt6 lacks: the check can fail."""
    pytest.importorskip("PyQt6.QtWidgets")
    missing = _missing_in(sys.executable, "PyQt6", ["Qt.AlignCenter", "Qt.AlignmentFlag.AlignCenter"])
    assert missing == ["Qt.AlignCenter"]
