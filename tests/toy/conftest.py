"""Fixtures for the toy-world tests: the shipped ``toy`` preset, loaded once per session on the CPU."""

from __future__ import annotations

import os

import pytest

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "resources", "models", "toy")


@pytest.fixture(scope="session")
def toy_models():
    import torch

    from engine.models.loading import load_models

    # One thread by default, like the engine tests: on shared cores spinning OpenMP workers cost more than
    # they give. BD_TEST_TORCH_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("BD_TEST_TORCH_THREADS", "1")))
    return load_models("toy", device="cpu")
