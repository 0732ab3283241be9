"""The cluster tests: those here need no Ray (shard planning, latent shards on one runner, a worker-less
cluster's error) and run anywhere; tests/cluster/ray/ holds the Ray ones, run by
test_ray_in_loopback_namespace.py in a loopback-only network namespace."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _step_times_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs record their step times (engine.editing.timing): into a temporary file, never the user's."""
    path = tmp_path_factory.mktemp("step-times") / "step_times.json"
    monkeypatch.setenv("BLENDED_DIFFUSION_STEP_TIMES", str(path))
