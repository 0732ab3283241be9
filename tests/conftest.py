"""Fixtures shared by the real-Krita tests in tests/krita/ and tests/installer/."""

import pytest

from tests.krita_env import ensure_krita

# Every real-Krita scenario runs on this machine's Krita 5.1 (Qt5) and on Krita 6 (Qt6) in a Debian root
# (tests/krita_roots.py): one plugin source for both.
BOTH_KRITAS = ["krita5.1", "krita6"]

# What runs for minutes goes first, so that the pytest-xdist workers run_tests.py starts end together rather
# than one of them running the toy evaluation alone at the end.
LONG_FIRST = ("tests/toy/test_semantic.py", "tests/cluster/test_ray_in_loopback_namespace.py", "tests/krita/")


def long_first_rank(nodeid: str) -> int:
    ranks = [rank for rank, prefix in enumerate(LONG_FIRST) if nodeid.startswith(prefix)]
    return ranks[0] if ranks else len(LONG_FIRST)


def pytest_collection_modifyitems(items: list) -> None:
    items.sort(key=lambda item: long_first_rank(item.nodeid))  # stable: each file keeps its own order


@pytest.fixture(scope="session", params=BOTH_KRITAS)
def krita(request):
    return ensure_krita(request.param)
