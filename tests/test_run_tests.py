"""run_tests.py spreads the suite over pytest-xdist workers unless the caller chose otherwise."""

import run_tests


def test_default_is_one_worker_per_core_up_to_four_a_file_each(monkeypatch):
    monkeypatch.delenv("BD_TEST_WORKERS", raising=False)
    monkeypatch.setattr(run_tests.os, "cpu_count", lambda: 2)
    assert run_tests.worker_args(["tests"]) == ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
    monkeypatch.setattr(run_tests.os, "cpu_count", lambda: 16)
    assert run_tests.worker_args([]) == ["-n", "4", "--dist", "loadfile", "--no-loadscope-reorder"]


def test_the_callers_choice_wins(monkeypatch):
    monkeypatch.setenv("BD_TEST_WORKERS", "3")
    assert run_tests.worker_args(["tests/engine", "-x"])[:2] == ["-n", "3"]
    for argv in (["-n", "1"], ["-n4"], ["--numprocesses=2"], ["-p", "no:xdist"]):
        assert run_tests.worker_args(argv) == []
    monkeypatch.setenv("BD_TEST_WORKERS", "0")
    assert run_tests.worker_args(["tests"]) == []
