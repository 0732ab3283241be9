"""The installer tests' copy of the working tree, made once: install.py runs from it, none writes into it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.installer.helpers import copy_working_tree


@pytest.fixture(scope="session")
def clone(tmp_path_factory) -> Path:
    return copy_working_tree(tmp_path_factory.mktemp("clone"))
