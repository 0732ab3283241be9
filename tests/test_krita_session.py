"""tests/krita_session.py with a stand-in for Krita: a plain Python process running the scenario runner
(tests/krita/scenario_runner.py) on these scenarios, so every way a session can go wrong runs in a second.
A failing scenario fails only the test that reads it; a crash fails the scenario it happened in and the
scenarios after it run in a new process; a hang is killed at the session's limit and the rest are "not run";
a process that dies before any scenario fails them all with its output."""

import os
import sys
import time
from pathlib import Path

import pytest

from tests import krita_session
from tests.krita_env import KritaInstall
from tests.krita_session import Scenario, run_session

ROOT = Path(__file__).resolve().parents[1]
HERE = "tests.test_krita_session"
# The runner as kritarunner would call it, with a `krita` module whose application has no documents.
STAND_IN = (
    "import sys, types; krita = types.ModuleType('krita'); "
    "krita.Krita = types.SimpleNamespace(instance=lambda: types.SimpleNamespace(documents=list)); "
    "sys.modules['krita'] = krita; from tests.krita import scenario_runner; "
    "scenario_runner.__main__(sys.argv[1:])"
)


class StandInKrita(KritaInstall):
    def command(self, argv, env, cwd, keep=()):
        assert argv[:3] == ["kritarunner", "-s", krita_session.RUNNER], argv
        return [sys.executable, "-c", STAND_IN, argv[3]], dict(env)


STAND_IN_KRITA = StandInKrita("stand-in")


class DeadOnArrival(KritaInstall):
    def command(self, argv, env, cwd, keep=()):
        return [sys.executable, "-c", "print('no display'); raise SystemExit(5)"], dict(env)


def returns(_engine):
    return {"pid": os.getpid()}


def raises(_engine):
    raise ValueError("the layer is a group")


def crashes(_engine):
    print("about to crash", flush=True)
    os._exit(3)


def hangs(_engine):
    time.sleep(120)


def not_json(_engine):
    return {"layers": {1, 2}}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(krita_session, "seed_resources", lambda krita, home: None)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*names: str, krita: KritaInstall = STAND_IN_KRITA, timeout: float = 60):
        scenarios = [Scenario(f"{i}-{name}", f"{HERE}:{name}") for i, name in enumerate(names)]
        return run_session(krita, env, tmp_path, scenarios, timeout=timeout)

    return run


def test_a_failing_scenario_fails_only_the_test_reading_it(run):
    results = run("returns", "raises", "not_json", "returns")
    assert results["0-returns"]["pid"] == results["3-returns"]["pid"], "one process for the session"
    with pytest.raises(pytest.fail.Exception, match="scenario '1-raises': ValueError: the layer is a group"):
        results["1-raises"]
    with pytest.raises(pytest.fail.Exception, match="TypeError") as caught:
        results["2-not_json"]
    assert "Traceback" in str(caught.value), "the scenario's traceback is in the failure"


def test_a_crash_fails_its_scenario_and_the_rest_run_in_a_new_process(run):
    results = run("returns", "crashes", "returns", "raises")
    with pytest.raises(pytest.fail.Exception, match="crashed \\(exit status 3\\)") as caught:
        results["1-crashes"]
    assert "about to crash" in str(caught.value), "Krita's output is in the failure"
    assert results["2-returns"]["pid"] != results["0-returns"]["pid"], "a new process after the crash"
    with pytest.raises(pytest.fail.Exception, match="ValueError"):
        results["3-raises"]


def test_a_hang_is_killed_at_the_limit_and_the_rest_are_not_run(run):
    results = run("returns", "hangs", "returns", timeout=8)
    assert results["0-returns"]["pid"]
    with pytest.raises(pytest.fail.Exception, match="timed out after 8 s in this scenario"):
        results["1-hangs"]
    with pytest.raises(pytest.fail.Exception, match="not run: stand-in timed out in scenario '1-hangs'"):
        results["2-returns"]


def test_a_krita_that_dies_before_any_scenario_fails_them_all_with_its_output(run):
    results = run("returns", "returns", krita=DeadOnArrival("dead"))
    said = "(?s)exited \\(status 5\\) before this scenario.*no display"
    for name in ("0-returns", "1-returns"):
        with pytest.raises(pytest.fail.Exception, match=said):
            results[name]


def test_a_scenario_names_its_engine_and_function():
    with pytest.raises(ValueError, match="engine one of"):
        Scenario("edit", f"{HERE}:returns", engine="gpu")
    with pytest.raises(ValueError, match="module:function"):
        Scenario("edit", "tests.test_krita_session.returns")
