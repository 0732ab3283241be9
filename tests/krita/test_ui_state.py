"""The plugin's widgets (krita_plugin/blended_diffusion/ui/) hold no job state: a job, its candidate group,
its thread and what waits for its reply are the model's (model/), and the widgets only show and call it.

Two checks: every attribute a ui/ module assigns is one of the widget's own (``self.name``) and not a name
of the model's state; and a candidate-group panel built against the real model (fake ports) refers to
none of the job's objects after showing its candidates."""

import ast
import os
import weakref
from pathlib import Path
from typing import List, Set

import pytest
from blended_diffusion.model.document import DocumentState
from blended_diffusion.model.jobs import Job
from blended_diffusion.model.plugin import PluginModel

from tests.krita.model_fakes import finish, make_model, response

UI = Path(__file__).resolve().parents[2] / "krita_plugin" / "blended_diffusion" / "ui"


def job_state_names(model: PluginModel) -> Set[str]:
    """The model's state: its attributes and properties, a document's and a job's fields, and the names
    the pending action had before it was the model's."""
    properties = {name for name, value in vars(PluginModel).items() if isinstance(value, property)}
    fields = set(DocumentState.__dataclass_fields__) | set(Job.__dataclass_fields__)
    return set(vars(model)) | properties | fields | {"pending", "_pending", "_round_outcome", "docker"}


def _root(node: ast.AST) -> List[str]:
    """``self.a.b[0].c`` -> ["self", "a", "b", "c"] (subscripts looked through)."""
    parts: List[str] = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "?")
    return parts[::-1]


def _targets(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            found = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            found = [node.target]
        else:
            continue
        while found:
            target = found.pop()
            if isinstance(target, (ast.Tuple, ast.List)):
                found.extend(target.elts)
            elif isinstance(target, ast.Starred):
                found.append(target.value)
            else:
                yield target


def state_assignments(source: str, where: str, forbidden: Set[str]) -> List[str]:
    """Assignments that put state anywhere but on the widget itself, or name the model's state."""
    found = []
    tree = ast.parse(source)
    for target in _targets(tree):
        if isinstance(target, ast.Name):
            continue  # a local (or a module's own table of widgets)
        chain = _root(target)
        own = chain[0] == "self" and len(chain) == 2  # self.name, self.name[key]
        table = len(chain) == 1  # a module's own table: name[key]
        if not (own or table) or chain[-1] in forbidden:
            found.append(f"{where}:{target.lineno}: assigns {'.'.join(chain)}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            found.append(f"{where}:{node.lineno}: setattr")
    return found


def test_no_widget_module_assigns_job_state(tmp_path):
    forbidden = job_state_names(make_model(tmp_path)[0])
    assert {"outcome", "worker", "job", "focus", "states", "question", "last_message"} <= forbidden
    paths = sorted(UI.glob("*.py"))
    assert {p.name for p in paths} >= {"docker.py", "review_panel.py", "extension.py", "engine_section.py"}
    found = [line for p in paths for line in state_assignments(p.read_text(), p.name, forbidden)]
    assert found == []


def test_the_check_sees_job_state_put_on_a_widget_or_on_the_model(tmp_path):
    forbidden = job_state_names(make_model(tmp_path)[0])
    source = (
        "class Panel:\n"
        "    def f(self, candidate, icon, w):\n"
        "        self.list = w\n"
        "        self.rows[0] = w\n"
        "        _panels[id(w)] = w\n"
        "        self.outcome = candidate\n"
        "        self.ctl.last_message = 'x'\n"
        "        candidate.icon = icon\n"
        "        self._pending, self.label = w, w\n"
        "        setattr(self, 'job', w)\n"
    )
    assert state_assignments(source, "panel.py", forbidden) == [
        "panel.py:6: assigns self.outcome",
        "panel.py:7: assigns self.ctl.last_message",
        "panel.py:8: assigns candidate.icon",
        "panel.py:9: assigns self._pending",
        "panel.py:10: setattr",
    ]


def _referenced(value, depth: int = 2):
    """``value`` and what its containers hold (weak references are not holding)."""
    yield value
    if depth and isinstance(value, dict):
        for item in list(value.keys()) + list(value.values()):
            yield from _referenced(item, depth - 1)
    elif depth and isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _referenced(item, depth - 1)


def test_the_candidate_panel_shows_the_models_group_and_keeps_none_of_it(tmp_path, monkeypatch):
    pytest.importorskip("PyQt6.QtWidgets", reason="PyQt6 is in requirements/dev.txt: run_tests.py has it")
    monkeypatch.setenv("QT_QPA_PLATFORM", os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    from blended_diffusion.qt import QApplication
    from blended_diffusion.ui.review_panel import ReviewPanel

    app = QApplication.instance() or QApplication([])
    model, _, jobs, _ = make_model(tmp_path)
    panel = ReviewPanel(model)
    model.start_edit(model.options_from_settings())
    job = model.job
    finish(jobs, response(3))
    outcome = model.outcome
    panel.refresh(True)
    assert panel.list.count() == 3 and panel.list.currentRow() == 0 and panel.accept_button.isEnabled()
    assert panel.more_button.isEnabled()
    model_objects = [outcome, outcome.response, outcome.request, job, job.pending, job.handle]
    model_objects += list(outcome.response.candidates)
    held = [v for value in vars(panel).values() for v in _referenced(value) if v is not model]
    assert not [obj for obj in model_objects if any(v is obj for v in held)]
    assert not set(vars(panel)) & (job_state_names(model) - {"list"})
    shown = weakref.ref(outcome.response.candidates[0])
    model.discard()
    panel.refresh(True)
    assert panel.list.count() == 0 and not panel.accept_button.isEnabled()
    del outcome, job, model_objects, held
    model.focus = None
    assert shown() is None  # the panel let the discarded group's candidates go
    app.processEvents()
