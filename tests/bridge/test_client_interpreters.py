"""The bridge client under the interpreters the plugin side uses: Krita's system Python and Python 3.8.

bridge/ is standard library only; this runs a real client in those interpreters (with ``-I``: no site
packages) against an in-process server with the fake runner.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from tests.bridge.helpers import TOKEN

REPO_ROOT = Path(__file__).resolve().parents[2]

CLIENT_SCRIPT = r"""
import json, sys, threading, zlib, struct
sys.path.insert(0, sys.argv[1])
from bridge.client import EngineClient
from bridge import errors

def png(w, h, channels):
    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    color = {1: 0, 4: 6}[channels]
    raw = (b"\x00" + b"\x80" * (w * channels)) * h
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

client = EngineClient("127.0.0.1", int(sys.argv[2]), sys.argv[3], timeout=10)
steps = []
result = client.edit({"steps": 3}, png(8, 8, 4), png(8, 8, 1),
                     on_progress=lambda info, p: steps.append(info.get("step")))
try:
    client.edit({"steps": 3, "fail": "crash"}, png(8, 8, 4), png(8, 8, 1))
    code = None
except errors.EngineJobError as exc:
    code = exc.code
print(json.dumps({"version": list(sys.version_info[:2]), "ping": "rtt" in client.ping(),
                  "device": client.status()["device"], "steps": steps,
                  "png": result["candidates"][0]["png"][:4].decode("latin-1"), "error": code}))
client.close()
"""


def plugin_side_interpreters() -> List[str]:
    found = []
    candidates = ["/usr/bin/python3", shutil.which("python3.8") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3")))
    for path in candidates:
        if not path or "shims" in path.split(os.sep):  # a pyenv shim may point at no installed version
            continue
        if os.path.exists(path) and os.path.realpath(path) not in {os.path.realpath(p) for p in found}:
            found.append(path)
    return found


INTERPRETERS = plugin_side_interpreters()


@pytest.mark.skipif(not INTERPRETERS, reason="neither Krita's system Python nor a Python 3.8 is installed")
@pytest.mark.parametrize("python", INTERPRETERS)
def test_client_runs_in_plugin_side_interpreter(fake_server, python):
    server, _runner = fake_server
    out = subprocess.run(
        [python, "-I", "-c", CLIENT_SCRIPT, str(REPO_ROOT), str(server.port), TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ping"] and report["device"] == "fake"
    assert report["steps"] == [None, 0, 1, 2, 3]  # queued, started, three steps
    assert report["png"] == "\x89PNG"
    assert report["error"] == "internal_error"
    print(f"{python}: Python {report['version'][0]}.{report['version'][1]} ok")
