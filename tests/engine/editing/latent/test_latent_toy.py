"""The shipped ``toy-latent`` preset end to end: ``python -m engine edit --models toy-latent`` writes ranked
candidates and scores.json, and a ``serve --models toy-latent`` engine runs the bridge's edit job, both with
the source byte for byte outside the mask."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bridge.client import EngineProcess
from engine.models import registry

ROOT = Path(__file__).resolve().parents[4]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _scene(tmp_path: Path):
    image = Image.new("RGB", (48, 40), (200, 200, 200))
    ImageDraw.Draw(image).rectangle((2, 2, 14, 14), fill=(30, 60, 220))
    mask = Image.new("L", (48, 40), 0)
    ImageDraw.Draw(mask).rectangle((20, 10, 39, 29), fill=255)
    image.save(tmp_path / "image.png")
    mask.save(tmp_path / "mask.png")
    return np.asarray(image), np.asarray(mask)


def test_toy_latent_is_a_shipped_latent_preset_ranked_by_the_toy_clip():
    preset = registry.get_preset("toy-latent")
    assert preset.method == "latent" and preset.pipeline.resolution == 32
    assert preset.clip is not None and preset.clip.path().is_file()
    assert preset.clip.path() == registry.get_preset("toy").clip.path()
    assert all(spec.sha256 and spec.path().is_file() for spec in preset.pipeline.files)
    folder = registry.get_preset(str(ROOT / "resources" / "models" / "toy-latent"))
    assert folder.clip.path() == preset.clip.path() and folder.pipeline.root == preset.pipeline.root
    training = json.loads((ROOT / "resources/models/toy-latent/preset.json").read_text())["training"]
    assert training["command"].startswith("python -m toyworld.train_latent") and training["seconds"] > 0


def test_cli_edit_with_toy_latent_writes_ranked_candidates(tmp_path):
    source, mask = _scene(tmp_path)
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "engine", "edit", "-p", "a red circle", "-i", str(tmp_path / "image.png"),
        "--mask", str(tmp_path / "mask.png"), "--models", "toy-latent", "--device", "cpu",
        "--batch_size", "3", "--output_path", str(out), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr
    guidance = registry.get_preset("toy-latent").edit_defaults["guidance_scale"]
    assert f"Blended Latent Diffusion: 50 of 50 DDIM steps, guidance {guidance:g}" in done.stderr
    summary = json.loads((out / "scores.json").read_text())
    files = [c["file"] for c in summary["candidates"]]
    assert files == sorted(n for n in os.listdir(out) if n.endswith(".png")) and len(files) == 3
    combined = [c["scores"]["combined"] for c in summary["candidates"]]
    assert combined == sorted(combined) and all(isinstance(v, float) for v in combined)
    for name in files:
        result = np.asarray(Image.open(out / name))
        assert np.array_equal(result[mask == 0], source[mask == 0])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("latent-engine")
    process = EngineProcess(
        sys.executable,
        str(ROOT),
        models="toy-latent",
        device="cpu",
        extra_env={"BLENDED_DIFFUSION_WEIGHTS": str(tmp / "weights"), "OMP_NUM_THREADS": "1"},
        log_path=str(tmp / "engine.log"),
    )
    host, port, token = process.start(timeout=240)
    try:
        yield host, port, token
    finally:
        process.stop()


def test_bridge_edit_job_with_toy_latent(engine, tmp_path):
    from bridge.client import EngineClient

    source, mask = _scene(tmp_path)
    host, port, token = engine
    reports = []
    with EngineClient(host, port, token, timeout=60.0) as client:
        status = client.status()
        assert status["models"]["preset"] == "toy-latent"
        assert status["models"]["edit_defaults"]["guidance_scale"] == 25.0
        result = client.edit(
            {"prompt": "a red circle", "batch_size": 2, "seed": 9},
            (tmp_path / "image.png").read_bytes(),
            (tmp_path / "mask.png").read_bytes(),
            on_progress=lambda info, _png: reports.append(info),
        )
    steps = [(r["step"], r["total"]) for r in reports if r["state"] == "running" and r.get("step")]
    assert steps and steps[-1] == (100, 100)  # 2 candidates x 50 steps
    assert [c["rank"] for c in result["candidates"]] == [1, 2]
    assert sorted(c["seed"] for c in result["candidates"]) == [9, 10]
    for candidate in result["candidates"]:
        patch = np.asarray(Image.open(io.BytesIO(candidate["png"])))
        cx, cy, cw, ch = candidate["box"]  # the selection's bounding box in the image sent
        assert patch.shape == (ch, cw, 4) and (cx, cy, cw, ch) == (20, 10, 20, 20)
        # the patch's alpha is the mask: 0 (untouched) wherever the selection is 0
        assert np.array_equal(patch[..., 3] > 0, mask[cy : cy + ch, cx : cx + cw] > 0)


def test_train_runs_the_latent_stage_only_on_its_own(capsys):
    from toyworld import train

    with pytest.raises(SystemExit):
        train.main(["--stages", "latent,adm"])
    assert "--stages latent trains another preset: run it on its own" in capsys.readouterr().err
