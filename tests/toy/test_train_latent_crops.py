"""toyworld.train_latent's multiscale data (``--crop-scenes``): a resumed stage on a copy of the shipped
toy-latent, a few steps of tiny data, so the data plumbing is checked, not the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from toyworld import train_latent

ROOT = Path(__file__).resolve().parents[2]


def _resume(tmp_path: Path, name: str, crops: int) -> dict:
    out = tmp_path / name
    shutil.copytree(ROOT / "resources" / "models" / "toy-latent", out)
    argv = ["--out", str(out), "--resume", "--scenes", "12", "--unet-steps", "1", "--batch", "2"]
    assert train_latent.main(argv + ["--crop-scenes", str(crops)]) == 0
    vae = json.loads((out / "vae" / "config.json").read_text())
    return {"scaling": vae["scaling_factor"], **json.loads((out / "preset.json").read_text())["training"]}


def test_crops_join_the_unet_data_without_moving_the_latents_scaling_factor(tmp_path, monkeypatch):
    seen = []
    real = train_latent.train_unet

    def spy(unet, text_encoder, latents, ids, *args, **kwargs):
        seen.append((latents.shape[0], ids.shape[0]))
        return real(unet, text_encoder, latents, ids, *args, **kwargs)

    monkeypatch.setattr(train_latent, "train_unet", spy)
    plain, cropped = _resume(tmp_path, "plain", 0), _resume(tmp_path, "cropped", 8)
    assert seen == [(12, 12), (20, 20)]  # the crops are UNet data, each with a caption (the empty one)
    assert cropped["scaling"] == plain["scaling"]  # measured on the scenes alone
    assert cropped["crop_scenes"] == 8 and "--crop-scenes 8" in cropped["command"]
