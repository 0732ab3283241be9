"""CLIP wrapper (open_clip): normalisation, encoders, OpenAI TorchScript files, LPIPS without download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.clip_model import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipModel,
    build_open_clip,
    get_lpips,
    read_clip_state_dict,
)
from engine.errors import WeightsCorruptError

TINY_CONFIG = json.loads((Path(__file__).parents[2] / "engine/models/tiny_clip.json").read_text())["config"]


def test_encode_image_normalises_resizes_and_passes_gradients(tiny_models):
    clip = tiny_models.clip
    assert clip.image_size == 32
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    emb = clip.encode_image(images)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    # same as normalising by hand: adaptive average pooling to 32 px, then (x - mean) / std
    by_hand = torch.nn.functional.adaptive_avg_pool2d(images.detach(), 32)
    by_hand = (by_hand - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(clip.encode_normalized(by_hand), emb.detach())
    (emb[:, 0].sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(Exception, match="B, 3, H, W"):
        clip.encode_image(torch.rand(3, 32, 32))


def test_encode_text_uses_the_standard_tokenizer(tiny_models):
    clip = tiny_models.clip
    tokens = clip.tokenize(["a red apple"])
    assert tokens.shape == (1, 77)
    assert tokens[0, 0].item() == 49406 and 49407 in tokens[0].tolist()  # start / end of text
    emb = clip.encode_text(["a red apple", "a blue sky"])
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(emb[0], emb[1])
    torch.testing.assert_close(clip.encode_text("a red apple"), emb[:1])


def test_openai_torchscript_file_loads_like_a_state_dict(tmp_path):
    torch.manual_seed(3)
    model = build_open_clip(TINY_CONFIG).eval()
    # OpenAI ships CLIP as a TorchScript archive with a few non-parameter entries
    script = torch.jit.script(_state_holder(model))
    path = tmp_path / "ViT-tiny.pt"
    script.save(str(path))
    state = read_clip_state_dict(path)
    assert "input_resolution" not in state
    reference = model.state_dict()
    assert set(state) == set(reference)
    clip = ClipModel.from_state_dict(TINY_CONFIG, state, torch.device("cpu"))
    image = torch.rand(1, 3, 32, 32)
    expected = torch.nn.functional.normalize(model.encode_image(clip.normalize(image)), dim=-1)
    torch.testing.assert_close(clip.encode_image(image), expected)


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _state_holder(model: torch.nn.Module) -> torch.nn.Module:
    """A scriptable module tree holding ``model``'s tensors under the same names, plus the integer
    entries OpenAI's files carry (``input_resolution``, ``context_length``, ``vocab_size``)."""
    root = _Holder()
    for name, tensor in model.state_dict().items():
        *parents, leaf = name.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, _Holder())
            node = getattr(node, part)
        node.register_buffer(leaf, tensor.clone())
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        root.register_buffer(key, torch.tensor(value))
    return root


def test_bad_clip_files_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsCorruptError, match="broken.pt"):
        read_clip_state_dict(bad)
    with pytest.raises(WeightsCorruptError, match="do not match"):
        ClipModel.from_state_dict(TINY_CONFIG, {"logit_scale": torch.ones(())}, torch.device("cpu"))


def test_lpips_builds_without_download():
    lpips_model = get_lpips("alex", pretrained_backbone=False)
    assert get_lpips("alex", pretrained_backbone=False) is lpips_model  # cached
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    assert lpips_model(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert lpips_model(a, -a).item() > 0
