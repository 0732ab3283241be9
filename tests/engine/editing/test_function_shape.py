"""The editing loops' functions stay readable (issue 36): none in engine/editing takes more than 12
parameters, and no call there passes more than 6 arguments by position (the rest by keyword)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

EDITING = Path(__file__).resolve().parents[3] / "engine" / "editing"
MAX_PARAMETERS, MAX_POSITIONAL = 12, 6


def _parameters(node: ast.FunctionDef) -> int:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
    return count - (bool(names) and names[0] in ("self", "cls"))


def _offenders() -> List[str]:
    found = []
    for path in sorted(EDITING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(EDITING.parents[1])}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _parameters(node) > MAX_PARAMETERS
            ):
                found.append(f"{where}: def {node.name} takes {_parameters(node)} parameters")
            if isinstance(node, ast.Call):
                positional = [a for a in node.args if not isinstance(a, ast.Starred)]
                if len(positional) > MAX_POSITIONAL:
                    found.append(f"{where}: {ast.unparse(node.func)}(...) with {len(positional)} positional")
    return found


def test_no_editing_function_takes_too_many_parameters_or_positional_arguments():
    assert EDITING.is_dir() and any(EDITING.rglob("blended.py"))
    assert _offenders() == []


def test_the_check_sees_a_long_signature_and_a_long_call():
    tree = ast.parse("def f(a, b, c, d, e, f, g, h, i, j, k, l, m): pass\nf(1, 2, 3, 4, 5, 6, 7)")
    definition, call = tree.body[0], tree.body[1].value
    assert _parameters(definition) == 13 > MAX_PARAMETERS
    assert len(call.args) == 7 > MAX_POSITIONAL
