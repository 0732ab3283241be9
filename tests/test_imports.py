"""The import rules of the layout (docs/design.md): which package may import which, and no import circles.

Every ``import`` in the project's own modules is read with ``ast``, at any depth (a lazy import inside a
function still ties two modules together). For the layer rules, imports under ``if TYPE_CHECKING:`` are
only annotations and are left out; for circles they count (a circle hidden from the interpreter is still
two modules that each need the other), and circles are looked for in the whole tree: tests/, bench/,
scripts/ and the top-level scripts too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # top-level folder -> the package name its modules are imported as
    "bridge": "bridge",
    "engine": "engine",
    "toyworld": "toyworld",
    "krita_plugin/blended_diffusion": "blended_diffusion",
    "installer": "installer",
}
# only in the circle check: (folder, the name its modules are imported as); the top-level scripts by stem
CIRCLE_ONLY = {"tests": "tests", "bench": "bench", "scripts": "scripts"}
# install.py, the installer's entry point, is a module of its own at the root.
ENTRY_POINTS = {"install.py": "install"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
KRITA_SIDE = {"PyQt5", "PyQt6", "krita", "pykrita"}


def module_name(path: Path, folder: str, package: str) -> str:
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool = False) -> Iterator[ast.AST]:
    """ast.walk, without the bodies of ``if TYPE_CHECKING:`` unless ``type_checking``."""
    for child in ast.iter_child_nodes(node):
        if not type_checking and isinstance(child, ast.If) and _is_type_checking(child):
            for orelse in child.orelse:
                yield orelse
                yield from _walk(orelse)
            continue
        yield child
        yield from _walk(child, type_checking)


def imports_of(path: Path, module: str, type_checking: bool = False) -> List[Tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports resolved; those under
    ``if TYPE_CHECKING:`` only with ``type_checking``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: List[Tuple[int, str]] = []
    for node in _walk(tree, type_checking):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from engine.models import weights`` imports the submodule engine.models.weights
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def project_modules() -> Dict[str, Path]:
    modules = {name: ROOT / file for file, name in ENTRY_POINTS.items()}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            modules[module_name(path, folder, package)] = path
    return modules


def all_modules() -> Dict[str, Path]:
    """The project's modules and every other Python file of the tree (tests, benches, scripts)."""
    modules = project_modules()
    for folder, package in CIRCLE_ONLY.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            modules[module_name(path, folder, package)] = path
    for path in sorted(ROOT.glob("*.py")):
        modules[path.stem] = path
    return modules


def _sibling(module: str, target: str, path: Path, modules: Dict[str, Path]) -> str:
    """A plain folder's scripts run with their folder on sys.path (bench/latent_gpu.py: ``from latent_cost
    import ...``): a bare name there is the file beside them."""
    if "." not in module or (path.parent / "__init__.py").exists():
        return target
    beside = f"{module.rsplit('.', 1)[0]}.{target}"
    return beside if beside in modules else target


def import_graph(
    modules: Optional[Dict[str, Path]] = None, type_checking: bool = False
) -> Tuple[Dict[str, Path], Dict[str, Dict[str, int]]]:
    """module -> {imported project module: first line}, only edges to modules that exist."""
    modules = project_modules() if modules is None else modules
    graph: Dict[str, Dict[str, int]] = {}
    for module, path in modules.items():
        edges: Dict[str, int] = {}
        for line, target in imports_of(path, module, type_checking):
            target = _sibling(module, target, path, modules)
            # a module always runs its own packages' __init__ first: that is no edge between roles
            if target in modules and target != module and not module.startswith(target + "."):
                edges.setdefault(target, line)
        graph[module] = edges
    return modules, graph


def rule_violations(modules: Dict[str, Path], graph: Dict[str, Dict[str, int]]) -> List[str]:
    """Edges that break the layout's rules, as 'file:line: a imports b (why)'."""
    forbidden = [  # (importer prefix, imported prefix, why)
        ("engine.models", "engine.editing", "the models know nothing of the editing job"),
        ("engine.models", "engine.jobs", "the models know nothing of the server's jobs"),
        ("engine.models", "engine.cli", "the models know nothing of the command lines"),
        ("engine.editing", "engine.jobs", "the method knows nothing of the server"),
        ("engine.editing", "engine.cli", "the method knows nothing of the command lines"),
        ("engine.jobs", "engine.cli", "the job kinds know nothing of the command lines"),
        ("engine.models", "engine.cluster", "the models know nothing of the cluster"),
        ("engine.editing", "engine.cluster", "the method knows nothing of the cluster"),
        ("engine.editing.shared", "engine.editing.paper", "the shared stages know neither method"),
        ("engine.editing.shared", "engine.editing.latent", "the shared stages know neither method"),
        ("engine.editing.shared", "engine.editing.editor", "the shared stages know nothing of the jobs"),
        ("engine.editing.shared", "engine.editing.extend", "the shared stages know nothing of the jobs"),
        (
            "engine.editing.paper",
            "engine.editing.latent",
            "the paper's method knows nothing of the latent one",
        ),
        ("engine.editing.latent", "engine.editing.paper", "the latent method knows nothing of the paper's"),
        ("engine.jobs", "engine.cluster", "the job kinds know nothing of the cluster that runs them"),
        ("engine.cluster", "engine.cli", "the cluster knows nothing of the command lines"),
        ("engine.errors", "engine.", "the errors import nothing of the project"),
        ("bridge", "engine", "bridge/ is shared with Krita: standard library only"),
        ("bridge", "blended_diffusion", "bridge/ knows nothing of the plugin"),
        ("blended_diffusion", "engine", "the plugin talks to the engine over the bridge only"),
        ("engine", "blended_diffusion", "the engine knows nothing of the plugin"),
        *[
            ("blended_diffusion.model", f"blended_diffusion.{name}", "the plugin's model is plain Python")
            for name in ("qt", "krita_api", "api", "iterating", "documents", "session", "backend", "ui")
        ],
        *[
            ("blended_diffusion.backend", f"blended_diffusion.{name}", "the engine's side knows no documents")
            for name in ("krita_api", "api", "iterating", "documents", "session", "ui")
        ],
        ("blended_diffusion.ui", "blended_diffusion.backend", "widgets bind to the model, not to threads"),
        ("engine", "toyworld", "the engine does not depend on the toy world's training code"),
        ("engine", "installer", "the installed engine copy has no installer"),
        ("bridge", "installer", "bridge/ knows nothing of the installer"),
        ("blended_diffusion", "installer", "the plugin knows nothing of the installer"),
    ]

    def within(name: str, prefix: str) -> bool:
        return name == prefix.rstrip(".") or name.startswith(prefix if prefix.endswith(".") else prefix + ".")

    found = []
    for module, edges in graph.items():
        for target, line in edges.items():
            for importer, imported, why in forbidden:
                if within(module, importer) and within(target, imported):
                    found.append(
                        f"{modules[module].relative_to(ROOT)}:{line}: {module} imports {target} ({why})"
                    )
    return found


def allowed_imports(top: str) -> Optional[Set[str]]:
    """The top-level modules a module of package ``top`` may import, or None where any may be.

    bridge/: the standard library only; the plugin: that, PyQt, krita and bridge; install.py and installer/:
    the standard library and the installer only, so ``python3 install.py`` runs on a fresh machine."""
    if top == "bridge":
        return STDLIB | {"bridge"}
    if top == "blended_diffusion":
        return STDLIB | {"bridge", "blended_diffusion"} | KRITA_SIDE
    if top in ("install", "installer"):
        return STDLIB | {"installer"}
    return None


def third_party_violations(modules: Dict[str, Path]) -> List[str]:
    """Imports outside what :func:`allowed_imports` lets each package import (the plugin's model: no
    PyQt, no krita either)."""
    found = []
    for module, path in modules.items():
        allowed = allowed_imports(module.split(".")[0])
        if allowed is None:
            continue
        if module == "blended_diffusion.model" or module.startswith("blended_diffusion.model."):
            allowed = allowed - KRITA_SIDE
        for line, target in imports_of(path, module):
            if target.split(".")[0] not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    return sorted(set(found))


def cycles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each an import circle."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    result: List[List[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_the_layout_rules_hold() -> None:
    modules, graph = import_graph()
    assert {"engine.models.registry", "engine.editing.shared.params", "bridge.server", "engine.jobs"} <= set(
        modules
    )
    assert {"engine.cluster.scheduler", "engine.cluster.worker"} <= set(modules)
    assert not rule_violations(modules, graph), "\n".join(rule_violations(modules, graph))


def test_bridge_plugin_and_installer_import_only_what_they_may() -> None:
    """bridge/ and the plugin: what Krita's Python has; install.py and installer/: the standard library."""
    modules = project_modules()
    assert {"install", "installer.cli", "installer.layout"} <= set(modules)
    violations = third_party_violations(modules)
    assert not violations, "\n".join(violations)


def test_no_import_circles_anywhere_in_the_tree() -> None:
    modules, graph = import_graph(all_modules(), type_checking=True)
    assert {"tests.cluster.conftest", "bench.latent_gpu", "scripts.krita_gui", "install"} <= set(modules)
    assert "bench.latent_cost" in graph["bench.latent_gpu"]  # a script's bare import of the file beside it
    circles = cycles(graph)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_checks_see_a_forbidden_import_and_a_circle(tmp_path: Path) -> None:
    """The checks themselves: a models module importing editing, and a two-module circle, are caught."""
    modules = {"engine.models.registry": ROOT / "engine/models/registry.py"}
    graph = {
        "engine.models.registry": {"engine.editing.shared.params": 7},
        "engine.editing.shared.params": {},
    }
    assert rule_violations(modules, graph) == [
        "engine/models/registry.py:7: engine.models.registry imports engine.editing.shared.params "
        "(the models know nothing of the editing job)"
    ]
    assert cycles({"a": {"b": 1}, "b": {"a": 2}, "c": {"a": 3}}) == [["a", "b"]]
    plugin = ROOT / "krita_plugin/blended_diffusion"
    model = {"blended_diffusion.model.plugin": plugin / "model/plugin.py"}
    assert rule_violations(model, {"blended_diffusion.model.plugin": {"blended_diffusion.qt": 3}}) == [
        "krita_plugin/blended_diffusion/model/plugin.py:3: blended_diffusion.model.plugin imports "
        "blended_diffusion.qt (the plugin's model is plain Python)"
    ]
    # a circle closed only by an import under TYPE_CHECKING or inside a function is a circle
    for hidden in ("if TYPE_CHECKING:\n    from pkg import a\n", "def f():\n    from pkg import a\n"):
        folder = tmp_path / hidden.split()[0].strip(":")
        (folder / "pkg").mkdir(parents=True)
        (folder / "pkg" / "a.py").write_text("from pkg import b\n")
        (folder / "pkg" / "b.py").write_text("from typing import TYPE_CHECKING\n" + hidden)
        pair = {name: folder / "pkg" / f"{name.split('.')[1]}.py" for name in ("pkg.a", "pkg.b")}
        assert cycles(import_graph(pair, type_checking=True)[1]) == [["pkg.a", "pkg.b"]], hidden
    # the engine importing the installer, and an installer module importing anything but the standard
    # library and the installer (a test module posing as one: it imports pytest and installer.*)
    assert rule_violations(
        {"engine.cli": ROOT / "engine/cli.py"}, {"engine.cli": {"installer.layout": 3}}
    ) == ["engine/cli.py:3: engine.cli imports installer.layout (the installed engine copy has no installer)"]
    posing = {"installer.posing": ROOT / "tests" / "installer" / "test_manifest.py"}
    assert [v.split(": ", 1)[1] for v in third_party_violations(posing)] == [
        "installer.posing imports pytest"
    ]
    sample = ROOT / "bridge" / "protocol.py"
    assert all(
        target.split(".")[0] in STDLIB | {"bridge"} for _, target in imports_of(sample, "bridge.protocol")
    )
