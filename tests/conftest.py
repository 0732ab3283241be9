"""Fixtures shared by the real-Krita tests in tests/krita/ and tests/installer/."""

import pytest

from tests.krita_env import ensure_krita

# Every real-Krita scenario runs on this machine's Krita 5.1 (Qt5) and on Krita 6 (Qt6) in a Debian root
# (tests/krita_roots.py): one plugin source for both.
BOTH_KRITAS = ["krita5.1", "krita6"]


@pytest.fixture(scope="session", params=BOTH_KRITAS)
def krita(request):
    return ensure_krita(request.param)
