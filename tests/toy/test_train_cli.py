"""Bad input to the toy training and evaluation commands: a clear error, nothing written."""

from __future__ import annotations

import pytest

from toyworld import evaluate, train


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adm-steps", "0"], "at least 1"),
        (["--stages", "clip,bogus"], "--stages takes clip, adm or both"),
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
