"""Run INSIDE real Krita by kritarunner: a test file's scenarios in one Krita process (tests/krita_session.py
writes the plan and reads the progress)::

    kritarunner -s tests.krita.scenario_runner <plan.json>

The plan: ``{"progress": path, "scenarios": [{"name", "target": "module:function", "engine"}]}``. The
progress file (replaced whole each time) names the scenario about to run, then holds its result: whatever
the function returned, or its error and traceback, and the seconds it took. The engine a scenario gets:
``real``, the plugin's own
EngineManager, one per session (one engine start for all), stopped at the end; ``fake``, a new FakeManager;
``none``, None. Documents a scenario leaves open are closed before the next one starts.
"""

import importlib
import json
import os
import time
import traceback
from typing import Any, Dict, Optional


class Engines:
    def __init__(self) -> None:
        self.real: Optional[Any] = None

    def get(self, kind: str) -> Any:
        if kind == "real":
            if self.real is None:
                from blended_diffusion.engine_manager import EngineManager, EngineSettings

                self.real = EngineManager(EngineSettings(), log_path=os.environ.get("BD_ENGINE_LOG"))
            return self.real
        if kind == "fake":
            from tests.krita.fake_engine import FakeManager

            return FakeManager()
        return None

    def stop(self) -> None:
        if self.real is not None:
            self.real.stop()


def write_progress(path: str, progress: Dict[str, Any]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(progress, handle, indent=1)
    os.replace(path + ".tmp", path)  # the file is always whole, whenever Krita stops


def run_one(spec: Dict[str, str], engines: Engines) -> Dict[str, Any]:
    try:
        module, _, function = spec["target"].partition(":")
        result = getattr(importlib.import_module(module), function)(engines.get(spec["engine"]))
        json.dumps(result)  # a result the test cannot read is this scenario's error, not the session's
        return result
    except Exception as exc:  # noqa: BLE001 - reported to the test that reads this scenario
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def close_documents() -> None:
    from krita import Krita

    for doc in Krita.instance().documents():
        doc.setModified(False)
        doc.close()


def __main__(args):
    with open(list(args)[0], encoding="utf-8") as handle:
        plan = json.load(handle)
    path = plan["progress"]
    progress: Dict[str, Any] = {"done": {}, "running": None, "seconds": {}}
    write_progress(path, progress)
    engines = Engines()
    try:
        for spec in plan["scenarios"]:
            progress["running"] = spec["name"]
            write_progress(path, progress)
            started = time.monotonic()
            progress["done"][spec["name"]] = run_one(spec, engines)
            progress["seconds"][spec["name"]] = round(time.monotonic() - started, 2)
            write_progress(path, progress)
            close_documents()  # a crash here still counts against this scenario
            progress["running"] = None
            write_progress(path, progress)
    finally:
        engines.stop()
