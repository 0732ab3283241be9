"""One Krita process runs a test file's scenarios in sequence; each test asserts on its own scenario's result.

A test module lists its scenarios (``Scenario``: a name, the in-Krita function, the engine it gets) and a
module-scoped fixture calls ``run_session``: kritarunner runs tests/krita/scenario_runner.py, which names
each scenario in a progress file before running it and records its result (or its error and traceback)
after. Reading a result (``SessionResults[name]``) fails the reading test, with why, when that scenario
failed, so a failing scenario fails only the tests that assert on it.

A Krita that crashes leaves the name of the scenario it crashed in: that scenario's tests fail with the
exit status and Krita's output, and the scenarios after it run in a new Krita (same HOME), so a crash hides
no other result. A Krita still running at the session's time limit is killed with its process group: the
scenario it was in fails as timed out, the ones after it fail as not run (no retry past the limit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence

from tests.krita_env import RUNNER, KritaInstall, seed_resources

ENGINES = ("real", "fake", "none")


@dataclass(frozen=True)
class Scenario:
    name: str  # the key the tests read
    target: str  # "tests.krita.<behaviour>.scenarios:function", called in Krita with the engine
    engine: str = "none"  # real: the session's one plugin EngineManager; fake: a new FakeManager; none: None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES or ":" not in self.target:
            raise ValueError(f"scenario {self.name}: engine one of {ENGINES}, target 'module:function'")


class SessionResults(Mapping):
    """The scenarios' results by name; a failed scenario's result fails the test that reads it."""

    def __init__(self, label: str, results: Mapping[str, dict], seconds: Mapping[str, float]) -> None:
        self.label = label
        self._results = dict(results)
        self.seconds = dict(seconds)  # each scenario's time in Krita, for a slow test's report

    def __getitem__(self, name: str) -> dict:
        import pytest

        result = self._results[name]
        if "error" in result:
            pytest.fail(f"{self.label}: scenario {name!r}: {result['error']}\n{result.get('traceback', '')}")
        return result

    def merged(self, later: SessionResults) -> SessionResults:
        """These results and a later session's (a Krita restart), each still failing only its readers."""
        return SessionResults(
            self.label, {**self._results, **later._results}, {**self.seconds, **later.seconds}
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)


def failure(error: str, detail: str = "") -> dict:
    return {"error": error, "traceback": detail}


def run_session(
    krita: KritaInstall,
    env: Mapping[str, str],
    home: Path,
    scenarios: Sequence[Scenario],
    tag: str = "session",
    timeout: float = 600,
) -> SessionResults:
    """Run ``scenarios`` in order in one ``krita`` (a new one after a crash) on ``home`` with ``env``."""
    seed_resources(krita, home)
    results: Dict[str, dict] = {}
    seconds: Dict[str, float] = {}
    pending: List[Scenario] = list(scenarios)
    deadline = time.monotonic() + timeout
    attempt = 0
    while pending:
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0:
            for scenario in pending:
                results[scenario.name] = failure(f"not run: the session's {timeout:.0f} s ran out")
            break
        progress_path = home / f"{tag}-progress-{attempt}.json"
        log = home / f"{tag}-krita-{attempt}.log"
        rc = _run_krita(krita, env, home, pending, progress_path, log, left)
        progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
        done = progress.get("done", {})
        results.update(done)
        seconds.update(progress.get("seconds", {}))
        running = progress.get("running")
        rest = [s for s in pending if s.name not in done and s.name != running]
        tail = log.read_text(errors="replace")[-3000:]
        label = krita.label
        if rc is None:  # killed at the time limit
            if running:
                results[running] = failure(f"{label}: timed out after {timeout:.0f} s in this scenario", tail)
            where = f"in scenario {running!r}" if running else "between scenarios"
            for scenario in rest:
                results[scenario.name] = failure(f"not run: {label} timed out {where}", tail)
            break
        if running:  # Krita ended inside a scenario: it crashed there; the rest get a new Krita
            why = f"{label} crashed (exit status {rc}) in this scenario or closing its documents"
            results[running] = failure(why, tail)
        elif rest:  # Krita ended before the runner started any (or the next) scenario: say so for all
            for scenario in rest:
                results[scenario.name] = failure(f"{label} exited (status {rc}) before this scenario", tail)
            break
        pending = rest
    # shown with the test's output (pytest -rA, or when it fails): where a slow session's time went
    print(f"{krita.label} {tag}:", ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()))
    return SessionResults(krita.label, results, seconds)


def _run_krita(
    krita: KritaInstall,
    env: Mapping[str, str],
    home: Path,
    scenarios: Sequence[Scenario],
    progress: Path,
    log: Path,
    timeout: float,
):
    """kritarunner runs ``scenarios``: its exit status, or None when it was killed at ``timeout``."""
    plan = progress.with_name(progress.name.replace("-progress-", "-plan-"))
    plan.write_text(json.dumps({"progress": str(progress), "scenarios": [asdict(s) for s in scenarios]}))
    cmd, run_env = krita.command(["kritarunner", "-s", RUNNER, str(plan)], env, home)
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            cmd, env=run_env, cwd=str(home), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # a Krita in a root runs under unshare and a shell
            process.wait()
            return None
