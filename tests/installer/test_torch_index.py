"""installer.torch_index, and install.py on any network: where torch comes from when the dedicated torch
index cannot be used.

install.py runs from a copy of the working tree in a throw-away HOME, with an existing virtual environment
(``--venv``) whose ``pip`` is a stand-in: it records every call and installs nothing, so the tests see
exactly which pip commands install.py makes without downloading gigabytes. The torch index is a local
address that refuses connections, a local server whose torch page answers (the stand-in pip then fails on
it), or an address only a configured proxy knows.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer import torch_index
from installer.layout import venv_python
from tests.installer.helpers import home_env, make_home, snapshot
from tests.local_http import serving

REFUSED = "http://127.0.0.1:9/whl/cpu"  # nothing listens on the discard port: refused at once

FAKE_PIP = """# Stand-in pip: records its arguments, answers `config list`, installs nothing.
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["config", "list"]:
    print(os.environ.get("FAKE_PIP_CONFIG", ""))
elif "--index-url" in args and args[args.index("--index-url") + 1] == os.environ.get("FAKE_PIP_BAD_INDEX"):
    print("ERROR: No matching distribution found for torch==2.14.1", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture()
def fake_venv(tmp_path) -> Path:
    """A virtual environment without torch and with the stand-in pip; install.py runs under it too, so it
    finds no torch to reuse and has to install one."""
    venv = tmp_path / "engine-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv_python(venv)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "pip").mkdir()
    (Path(site) / "pip" / "__init__.py").write_text("")
    (Path(site) / "pip" / "__main__.py").write_text(FAKE_PIP)
    return venv


def run(clone: Path, home: Path, venv: Path, *args: str, env_extra: dict | None = None):
    log = home.parent / "pip-calls.jsonl"
    env = home_env(home)
    for key in [k for k in env if k.upper().startswith("PIP_") or k.lower().endswith("_proxy")]:
        del env[key]  # this machine's own pip settings and proxies are not the test's
    env.update(FAKE_PIP_LOG=str(log), **(env_extra or {}))
    command = [str(venv_python(venv)), str(clone / "install.py"), "--venv", str(venv)]
    command += ["--torch", "cpu", "--no-weights", "--no-first-edit", "--yes", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, [call for call in calls if call[:1] == ["install"]]


def requirements_call(clone: Path) -> list:
    return ["install", "--disable-pip-version-check", "-r", str(clone / "requirements" / "engine.txt")]


def test_unreachable_torch_index_falls_back_to_pypi(clone, tmp_path, fake_venv):
    home = make_home(tmp_path)
    result, installs = run(clone, home, fake_venv, "--torch-index", REFUSED)
    assert result.returncode == 0, result.stdout + result.stderr
    # One pip run, from PyPI: torch comes with the rest of requirements/engine.txt; the index is never used.
    assert installs == [requirements_call(clone)]
    assert f"the torch index {REFUSED} cannot be reached" in result.stdout
    assert "installing torch from PyPI instead" in result.stdout
    if sys.platform.startswith("linux"):
        assert "PyPI's torch is the CUDA build" in result.stdout and "also runs on the CPU" in result.stdout
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert record["python"] == str(venv_python(fake_venv))


class TorchPage(http.server.BaseHTTPRequestHandler):
    """An index (or a proxy) whose torch page answers; it remembers what it was asked for."""

    requested: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        TorchPage.requested.append(self.path)
        body = b"<html><body><a href='torch-2.14.1.whl'>torch</a></body></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def torch_page():
    TorchPage.requested = []
    with serving(TorchPage) as url:
        yield url


def test_failing_torch_index_falls_back_to_pypi(clone, tmp_path, fake_venv, torch_page):
    index = torch_page + "/whl/cpu"
    home = make_home(tmp_path)
    result, installs = run(
        clone, home, fake_venv, "--torch-index", index, env_extra={"FAKE_PIP_BAD_INDEX": index}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert TorchPage.requested == ["/whl/cpu/torch/"]  # the probe found the index answering
    base = ["install", "--disable-pip-version-check"]
    assert installs == [
        base + ["torch==2.14.1", "torchvision==0.29.1", "--index-url", index],
        requirements_call(clone),
    ]
    assert f"installing torch from {index} failed" in result.stdout
    assert "installing torch from PyPI instead" in result.stdout


def test_pip_configuration_is_respected(clone, tmp_path, fake_venv, torch_page):
    """The user's proxy carries the probe (an index name only the proxy resolves), and their index-url is
    what 'PyPI' means in the messages; the torch index is used when it answers."""
    index = "http://torch-index.invalid/whl/cpu"
    config = "\n".join(
        [
            "global.index-url='https://mirror.example/simple'",
            "global.find-links='/srv/wheels'",
            f":env:.proxy='{torch_page}'",
        ]
    )
    home = make_home(tmp_path)
    result, installs = run(
        clone, home, fake_venv, "--torch-index", index, env_extra={"FAKE_PIP_CONFIG": config}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert TorchPage.requested == [index + "/torch/"], "the probe went through the configured proxy"
    assert installs[0][-2:] == ["--index-url", index] and installs[1] == requirements_call(clone)
    assert "your pip configuration is used:" in result.stdout
    assert (
        "find-links=/srv/wheels" in result.stdout
        and "index-url=https://mirror.example/simple" in result.stdout
    )
    # Now the index fails: the fallback names the user's own index, not PyPI.
    result, installs = run(
        clone,
        home,
        fake_venv,
        "--torch-index",
        index,
        env_extra={"FAKE_PIP_CONFIG": config, "FAKE_PIP_BAD_INDEX": index},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installing torch from your pip index https://mirror.example/simple instead" in result.stdout


def test_notes_and_probe_errors_name_the_problem():
    assert torch_index.pypi_torch_note("win32", {}).startswith(
        "installing torch from PyPI instead. On Windows"
    )
    assert "CUDA build" in torch_index.pypi_torch_note("linux", {})
    assert torch_index.index_problem("file:///no/such/index", {}) == "/no/such/index/torch does not exist"
    assert "not an http(s) or file URL" in torch_index.index_problem("ftp://x/simple", {})


def test_fallback_install_uninstalls_cleanly(clone, tmp_path, fake_venv):
    home = make_home(tmp_path)
    before = snapshot(home)
    result, _ = run(clone, home, fake_venv, "--torch-index", REFUSED)
    assert result.returncode == 0, result.stdout + result.stderr
    env = home_env(home)
    undo = subprocess.run(
        [sys.executable, str(clone / "install.py"), "--uninstall", "--yes"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert undo.returncode == 0
    assert snapshot(home) == before
    assert fake_venv.is_dir(), "a virtual environment install.py did not make stays"


def test_torch_index_per_variant_and_platform():
    assert torch_index.torch_index("cpu", "linux", None) == torch_index.TORCH_CPU_INDEX
    assert torch_index.torch_index("cuda", "linux", None) is None  # PyPI's Linux wheels are the CUDA builds
    assert torch_index.torch_index("default", "darwin", None) is None
    assert torch_index.torch_index("cpu", "linux", "https://mirror/x") == "https://mirror/x"
    assert torch_index.torch_index("cuda", "win32", None) == torch_index.TORCH_CUDA_INDEX_WINDOWS
    assert torch_index.torch_index("cpu", "darwin", None) is None  # macOS wheels on PyPI are CPU/MPS
    assert torch_index.torch_variant("auto", "darwin") == "default"
    assert torch_index.torch_variant("cpu", "linux") == "cpu"
