"""CLIP wrapper (open_clip): normalisation, encoders, OpenAI TorchScript files, LPIPS without download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import EngineError, WeightsCorruptError, WeightsMissingError
from engine.models import clip as clip_model
from engine.models import weights
from engine.models.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipModel,
    build_open_clip,
    get_lpips,
    read_clip_state_dict,
)
from engine.models.registry import load_model_spec

SPECS = Path(__file__).parents[3] / "engine/models/specs"
TINY_CONFIG = json.loads((SPECS / "tiny_clip.json").read_text())["config"]


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


@pytest.fixture
def no_downloads(monkeypatch):
    """Every hub download entry point raises: LPIPS must never fetch torchvision's weights."""
    import torch.hub
    import torch.utils.model_zoo
    import torchvision.models._api

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.utils.model_zoo, "load_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(clip_model, "_LPIPS_CACHE", {})  # no model cached by another test
    return calls


def _vgg16_file(folder: Path):
    """Seeded random torchvision VGG16 ``features`` saved under torchvision's keys, and its spec.

    Only ``features`` is made (``make_layers(cfgs["D"])`` is what ``torchvision.models.vgg16`` builds
    them with): the 124M-parameter classifier is not used by LPIPS and would make the file ~528 MB.
    """
    from torchvision.models import vgg16
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1234)
    features = make_layers(cfgs["D"]).eval()
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    with torch.device("meta"):  # torchvision's own key names and shapes, without allocating 528 MB
        reference = {k: v.shape for k, v in vgg16().state_dict().items() if k.startswith("features.")}
    assert {k: v.shape for k, v in state.items()} == reference
    state["classifier.6.bias"] = torch.zeros(1000)  # extra keys of the full file are ignored
    spec = load_model_spec("lpips_vgg16")
    path = folder / spec.file
    torch.save(state, path)
    spec.sha256 = weights.sha256_file(path)  # the test file's own digest stands in for torchvision's
    spec.sha256_prefix = None
    spec.size_bytes = path.stat().st_size
    return features, spec


def test_lpips_vgg_backbone_is_loaded_from_the_weights_folder(tmp_path, no_downloads):
    features, spec = _vgg16_file(tmp_path)
    model = get_lpips("vgg", torch.device("cpu"), backbone_spec=spec, weights_dir=tmp_path)
    assert get_lpips("vgg", torch.device("cpu"), backbone_spec=spec, weights_dir=tmp_path) is model
    compared = 0
    for number in range(1, 6):
        for name, layer in getattr(model.net, f"slice{number}").named_children():
            source = features[int(name)]
            assert type(layer) is type(source)
            if isinstance(layer, torch.nn.Conv2d):
                assert torch.equal(layer.weight, source.weight) and torch.equal(layer.bias, source.bias)
                compared += 1
    assert compared == 13  # every conv of VGG16
    # the five LPIPS taps are torchvision's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    x = torch.rand(1, 3, 32, 32)
    taps = model.net(x)
    with torch.no_grad():
        for tap, end in zip(taps, (4, 9, 16, 23, 30)):
            torch.testing.assert_close(tap, features[:end](x))
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    assert model(a, a).item() == pytest.approx(0.0, abs=1e-6) and model(a, -a).item() > 0
    assert not any(p.requires_grad for p in model.parameters())
    assert no_downloads == []


def test_lpips_without_the_backbone_file_says_how_to_get_it(weights_dir, no_downloads):
    spec = load_model_spec("lpips_vgg16")
    for kwargs in ({}, {"weights_dir": weights_dir, "backbone_spec": spec}):
        with pytest.raises(WeightsMissingError) as info:
            get_lpips("vgg", **kwargs)
        message = str(info.value)
        assert "vgg16-397923af.pth" in message and str(weights_dir) in message
        assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
        assert "python -m engine download" in message and "528 MB" in message
    with pytest.raises(EngineError, match="only 'vgg'"):
        get_lpips("alex", pretrained_backbone=True)
    assert no_downloads == [] and list(weights_dir.iterdir()) == []


def test_lpips_backbone_file_that_is_not_vgg16_is_refused(tmp_path, no_downloads):
    spec = load_model_spec("lpips_vgg16")
    path = tmp_path / spec.file
    torch.save({"features.0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsCorruptError, match="SHA-256"):  # not the published file
        get_lpips("vgg", backbone_spec=spec, weights_dir=tmp_path)
    spec.sha256, spec.sha256_prefix, spec.size_bytes = weights.sha256_file(path), None, None
    with pytest.raises(WeightsCorruptError, match="not torchvision's vgg16"):
        get_lpips("vgg", backbone_spec=spec, weights_dir=tmp_path)
    assert no_downloads == []
