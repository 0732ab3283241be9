"""Bad input to the toy training and evaluation commands: a clear error, nothing written."""

from __future__ import annotations

import pytest

from toyworld import evaluate, train


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adm-steps", "0"], "at least 1"),
        (["--stages", "clip,bogus"], "--stages takes any of adm, clip, multiscale"),
        (["--stages", "adm"], "needs"),  # no CLIP file from an earlier run in the empty folder
        (["--presets-only"], "--presets-only needs"),
    ],
)
def test_train_rejects_bad_arguments_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--out", str(out), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_evaluate_rejects_zero_scenes(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--scenes", "0"])
    assert "--scenes must be at least 1" in capsys.readouterr().err


def test_train_refuses_a_second_multiscale_stage_and_writes_nothing(tmp_path, capsys):
    """'clip' and 'multiscale' go on from the single-scale ADM: a file past that stage is refused."""
    import json

    out = tmp_path / "out"
    out.mkdir()
    (out / train.UNET_FILE).write_bytes(b"an ADM after its multiscale stage")
    (out / train.CLIP_FILE).write_bytes(b"a CLIP")
    (out / "preset.json").write_text(json.dumps({"training": {"adm_sha256": "0" * 64}}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for stages in ("multiscale", "clip", "clip,multiscale"):
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--out", str(out), "--stages", stages])
        assert exit_info.value.code == 2
        assert "has had its multiscale stage already" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_multiscale_training_leaves_its_base_unchanged_and_is_seeded():
    import torch

    from engine.models.unet import unet_from_flags
    from toyworld.data import crop_bank
    from toyworld.train_adm import TOY_MODEL_FLAGS, train_multiscale

    crops = crop_bank(6, 32, seed=5)
    assert crops.shape == (6, 3, 32, 32) and crops.dtype == torch.uint8
    assert torch.equal(crops, crop_bank(6, 32, seed=5)) and not torch.equal(crops, crop_bank(6, 32, seed=6))

    torch.manual_seed(0)
    base = unet_from_flags(TOY_MODEL_FLAGS).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}

    def run():
        return train_multiscale(base, 2, batch_size=2, scene_count=4, crop_count=4, log=lambda _: None)

    first, second = run(), run()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in first.state_dict().items())
