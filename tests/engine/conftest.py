"""Shared fixtures for the engine tests: the ``tiny`` models, made once per session in a temporary
weights folder (so a user's real weights folder is never touched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread: on a shared 2-core machine torch's OpenMP workers spin against other processes and
# small models run 10-30x slower. BD_TEST_TORCH_THREADS overrides (e.g. on a dedicated CI machine).
torch.set_num_threads(int(os.environ.get("BD_TEST_TORCH_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder for the session; ``tiny`` files are generated into it on first load."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def loaded_tiny_models(tiny_weights_dir: Path):
    """``load_models("tiny")`` on the CPU, loaded once a session."""
    from engine.models.loading import load_models

    return load_models("tiny", weights_dir=tiny_weights_dir, device="cpu")


@pytest.fixture
def tiny_models(loaded_tiny_models):
    """The session's tiny models (frozen UNet, 32 px; tiny CLIP, 32 px) handed to each test in fp32: a job
    leaves its precision's weights converted (auto is bf16 on a CPU with native bf16), and a test of the
    models themselves must not depend on which job ran before it."""
    import torch

    loaded_tiny_models.unet.set_inner_dtype(torch.float32)  # restores the fp32 weights exactly
    loaded_tiny_models.clip.set_dtype(torch.float32)
    return loaded_tiny_models


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights folder, also set as $BLENDED_DIFFUSION_WEIGHTS for code that reads the default."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("BLENDED_DIFFUSION_WEIGHTS", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _step_times_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edits record their step times (engine.editing.timing): into a temporary file, never the user's."""
    path = tmp_path_factory.mktemp("step-times") / "step_times.json"
    monkeypatch.setenv("BLENDED_DIFFUSION_STEP_TIMES", str(path))
