"""Scripts use the engine the docker's saved settings name (issue 30): a remote engine set in the docker
is the one ``api.run_edit_and_wait`` reaches without ``engine=``, in Krita 5.1 and Krita 6."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blended_diffusion.engine_manager import saved_engine_settings
from blended_diffusion.settings import SettingsStore

from tests.krita_env import ROOT, scenario_environment
from tests.krita_session import Scenario, run_session

TOKEN = "engine-settings-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_saved_settings_make_the_engine_settings(tmp_path):
    path = tmp_path / "plugin-settings.json"
    path.write_text(
        json.dumps(
            {
                "engine_mode": "remote",
                "remote_host": "10.1.2.3",
                "remote_port": 7000,
                "remote_token": "t",
                "remote_fingerprint": "ab" * 32,
                "device": "cpu",
            }
        )
    )
    s = saved_engine_settings(SettingsStore(str(path)))
    assert (s.mode, s.host, s.port, s.token, s.fingerprint, s.device) == (
        "remote",
        "10.1.2.3",
        7000,
        "t",
        "ab" * 32,
        "cpu",
    )
    assert saved_engine_settings(SettingsStore(str(tmp_path / "none.json"))).mode == "local"


@pytest.fixture(scope="module")
def remote_engine(tmp_path_factory):
    """A real engine (tiny models) serving on loopback, as a GPU host behind an SSH tunnel would."""
    port = free_port()
    log = tmp_path_factory.mktemp("remote-engine") / "serve.log"
    env = dict(os.environ, BLENDED_DIFFUSION_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--models", "tiny", "--port", str(port)],
            cwd=str(ROOT),
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    if proc.poll() is not None:
        pytest.fail("the engine did not start:\n" + log.read_text(errors="replace")[-3000:])
    yield port, log
    proc.terminate()
    proc.wait(timeout=30)


def test_script_without_engine_uses_the_saved_remote_engine(tmp_path, krita, remote_engine):
    port, log = remote_engine
    env = scenario_environment(tmp_path, "tiny")
    settings = {
        "engine_mode": "remote",
        "remote_host": "127.0.0.1",
        "remote_port": port,
        "remote_token": TOKEN,
    }
    (tmp_path / "plugin-settings.json").write_text(json.dumps(settings))
    # The local engine's record names a Python that does not exist: a local start would fail.
    record = json.loads((tmp_path / "engine.json").read_text())
    record["python"] = str(Path(tmp_path) / "no-such-python")
    (tmp_path / "engine.json").write_text(json.dumps(record))
    scenario = Scenario("saved_remote", "tests.krita.engine_settings.scenarios:scenario_saved_remote")
    r = run_session(krita, env, tmp_path, [scenario])["saved_remote"]
    assert (r["mode"], r["host"], r["port"]) == ("remote", "127.0.0.1", port)
    assert r["candidates"] == 2 and r["source_unchanged"]
