"""The Ray tests (tests/cluster/ray/) run here, inside a network namespace with only loopback.

Ray 2.60 binds the machine's own network address even when told 127.0.0.1, and no test traffic may leave
loopback: ``unshare -n`` gives the tests a namespace where loopback is all there is (root is needed; CI and
this machine have it). Their result is read from a JUnit report: every test must have run and passed (none
skipped), and no Ray daemon may outlive them. (The rest of tests/cluster/ needs no Ray: it runs as is.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tests.cluster.processes import ray_daemon_pids

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_TESTS = 15  # tests/cluster/ray/: 6 of the shared server, 3 faults, 2 latent, 4 command lines


def test_cluster_suite_passes_in_a_loopback_only_namespace(tmp_path: Path) -> None:
    assert shutil.which("unshare") and shutil.which("ip"), "unshare and ip (util-linux, iproute2) are needed"
    report = tmp_path / "cluster.xml"
    before = ray_daemon_pids()
    inner = (
        "ip link set lo up && exec env BD_LOOPBACK_NETNS=1 "
        f"{sys.executable} -m pytest -q -p no:cacheprovider --junitxml={report} "
        # its own temporary folder: pytest's clean-up of old numbered ones (another run's) never takes it
        f"--basetemp={tmp_path / 'inner'} tests/cluster/ray"
    )
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
    )
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, output
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}, output
    assert ray_daemon_pids() <= before, "Ray daemons outlived the cluster tests"
