"""The ADM UNet: checkpoint structure (strict loading), attention numerics, flags, tiny forward."""

from __future__ import annotations

import time

import pytest
import torch

from engine.models.unet import (
    AttentionBlock,
    UNetModel,
    attention_reference,
    qkv_attention,
    split_heads,
    timestep_embedding,
    unet_from_flags,
)

ADM256_FLAGS = {
    "attention_resolutions": "32,16,8",
    "class_cond": False,
    "diffusion_steps": 1000,
    "rescale_timesteps": True,
    "image_size": 256,
    "learn_sigma": True,
    "noise_schedule": "linear",
    "num_channels": 256,
    "num_head_channels": 64,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_fp16": True,
    "use_scale_shift_norm": True,
}


def published_adm256_structure() -> dict[str, tuple[int, ...]]:
    """Key -> shape of 256x256_diffusion_uncond.pt, written out from the published structure
    (independently of engine.models.unet): C=256, mults 1,1,2,2,4,4, 2 res blocks, attention at 32/16/8 px."""
    c, emb = 256, 1024
    keys: dict[str, tuple[int, ...]] = {}

    def gn(prefix: str, ch: int) -> None:
        keys[f"{prefix}.weight"] = (ch,)
        keys[f"{prefix}.bias"] = (ch,)

    def conv(prefix: str, cin: int, cout: int, k: int) -> None:
        keys[f"{prefix}.weight"] = (cout, cin, k, k)
        keys[f"{prefix}.bias"] = (cout,)

    def res(prefix: str, cin: int, cout: int) -> None:
        gn(f"{prefix}.in_layers.0", cin)
        conv(f"{prefix}.in_layers.2", cin, cout, 3)
        keys[f"{prefix}.emb_layers.1.weight"] = (2 * cout, emb)
        keys[f"{prefix}.emb_layers.1.bias"] = (2 * cout,)
        gn(f"{prefix}.out_layers.0", cout)
        conv(f"{prefix}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.skip_connection", cin, cout, 1)

    def attn(prefix: str, ch: int) -> None:
        gn(f"{prefix}.norm", ch)
        keys[f"{prefix}.qkv.weight"] = (3 * ch, ch, 1)
        keys[f"{prefix}.qkv.bias"] = (3 * ch,)
        keys[f"{prefix}.proj_out.weight"] = (ch, ch, 1)
        keys[f"{prefix}.proj_out.bias"] = (ch,)

    keys["time_embed.0.weight"] = (emb, c)
    keys["time_embed.0.bias"] = (emb,)
    keys["time_embed.2.weight"] = (emb, emb)
    keys["time_embed.2.bias"] = (emb,)
    conv("input_blocks.0.0", 3, c, 3)
    # (resolution, channels) per level
    levels = [(256, 256), (128, 256), (64, 512), (32, 512), (16, 1024), (8, 1024)]
    attention_px = {32, 16, 8}
    n, ch, skips = 1, c, [c]
    for li, (px, out_ch) in enumerate(levels):
        for _ in range(2):
            res(f"input_blocks.{n}.0", ch, out_ch)
            ch = out_ch
            if px in attention_px:
                attn(f"input_blocks.{n}.1", ch)
            skips.append(ch)
            n += 1
        if li < len(levels) - 1:
            res(f"input_blocks.{n}.0", ch, ch)  # down ResBlock
            skips.append(ch)
            n += 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for li in reversed(range(len(levels))):
        px, out_ch = levels[li]
        for i in range(3):
            res(f"output_blocks.{n}.0", ch + skips.pop(), out_ch)
            ch = out_ch
            j = 1
            if px in attention_px:
                attn(f"output_blocks.{n}.{j}", ch)
                j += 1
            if li > 0 and i == 2:
                res(f"output_blocks.{n}.{j}", ch, ch)  # up ResBlock
            n += 1
    gn("out.0", ch)
    conv("out.2", c, 6, 3)
    return keys


def test_default_unet_matches_published_checkpoint_structure():
    with torch.device("meta"):
        model = unet_from_flags(ADM256_FLAGS)
    state = model.state_dict()
    expected = published_adm256_structure()
    assert len(expected) == 566
    assert sum(torch.Size(s).numel() for s in expected.values()) == 552_814_086
    assert set(state) == set(expected)
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    # a checkpoint of exactly these keys and shapes loads strictly (meta tensors: no 2 GB allocation)
    checkpoint = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    with torch.device("meta"):
        fresh = unet_from_flags(ADM256_FLAGS)
    result = fresh.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # and one key too many or too few is refused
    checkpoint["extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(checkpoint, strict=True, assign=True)


def test_flags_variants_build_expected_shapes():
    with torch.device("meta"):
        cond512 = unet_from_flags({**ADM256_FLAGS, "image_size": 512, "class_cond": True, "use_fp16": False})
        plain = unet_from_flags(
            {**ADM256_FLAGS, "image_size": 64, "resblock_updown": False, "learn_sigma": False}
        )
    assert cond512.channel_mult == (0.5, 1, 1, 2, 2, 4, 4)
    assert cond512.label_emb.weight.shape == (1000, 1024)
    assert cond512.input_blocks[0][0].weight.shape == (128, 3, 3, 3)
    assert cond512.out[2].weight.shape == (6, 128, 3, 3)
    assert plain.channel_mult == (1, 2, 3, 4) and plain.out[2].weight.shape[0] == 3
    assert "input_blocks.3.0.op.weight" in plain.state_dict()  # strided-conv Downsample
    assert "output_blocks.2.2.conv.weight" in plain.state_dict()  # res, attention, conv Upsample
    blocks = [m for m in cond512.modules() if isinstance(m, AttentionBlock)]
    assert blocks and all(b.num_heads == b.channels // 64 for b in blocks)  # num_head_channels 64
    with pytest.raises(ValueError, match="channel_mult"):
        unet_from_flags({**ADM256_FLAGS, "image_size": 96})


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 747.0])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, :4], torch.cos(747.0 * freqs))
    torch.testing.assert_close(emb[1, 4:], torch.sin(747.0 * freqs))
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_legacy_head_order_is_head_major():
    heads, ch, length = 2, 3, 5
    # label each channel of the packed tensor with its index
    qkv = torch.arange(3 * heads * ch, dtype=torch.float32)[None, :, None].expand(1, -1, length)
    q, k, v = split_heads(qkv, heads, legacy_order=True)
    # head 0 takes channels [q0 k0 v0] = 0..8, head 1 takes 9..17
    assert q[:, :, 0].tolist() == [[0, 1, 2], [9, 10, 11]]
    assert v[:, :, 0].tolist() == [[6, 7, 8], [15, 16, 17]]
    q, k, v = split_heads(qkv, heads, legacy_order=False)
    # new order: all q first (head 0 then head 1), then all k, then all v
    assert q[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert k[:, :, 0].tolist() == [[6, 7, 8], [9, 10, 11]]


@pytest.mark.parametrize("legacy", [True, False])
def test_sdpa_matches_explicit_attention_formula(legacy):
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 3 * 4 * 16, 64, generator=generator) * 3
    fused = qkv_attention(qkv, 4, legacy, use_sdpa=True)
    # the reference formula written out: softmax over s of sum_c q[c,t] k[c,s] / sqrt(C), times v
    q, k, v = split_heads(qkv, 4, legacy)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / 16**0.5, dim=-1)
    explicit = torch.einsum("bts,bcs->bct", weight, v).reshape(2, -1, 64)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qkv_attention(qkv, 4, legacy, use_sdpa=False), explicit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        attention_reference(q, k, v).reshape(2, -1, 64), explicit, rtol=1e-5, atol=1e-5
    )


def test_tiny_forward_and_input_gradient(tiny_models):
    unet = tiny_models.unet
    assert not any(p.requires_grad for p in unet.parameters())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    t = torch.tensor([747.0, 10.0])
    unet(x, t)  # warm-up
    start = time.perf_counter()
    out = unet(x, t)
    print(f"\ntiny UNet forward (batch 2, 32x32, CPU): {1000 * (time.perf_counter() - start):.1f} ms")
    assert out.shape == (2, 6, 32, 32)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    out[:, :3].square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # attention path choice does not change the result
    unet.set_sdpa(False)
    try:
        torch.testing.assert_close(unet(x, t), out, rtol=1e-4, atol=1e-5)
    finally:
        unet.set_sdpa(True)


def small_unet(**overrides) -> UNetModel:
    args = dict(
        image_size=16,
        in_channels=3,
        model_channels=32,
        out_channels=3,
        num_res_blocks=1,
        attention_resolutions=[2],
        channel_mult=(1, 2),
        num_head_channels=16,
        use_scale_shift_norm=True,
        resblock_updown=True,
    )
    args.update(overrides)
    torch.manual_seed(0)
    model = UNetModel(**args)
    with torch.no_grad():  # zero-initialised output convs would hide differences
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model.eval()


def test_checkpointing_and_dropout_flags_keep_results():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    t = torch.tensor([3.0, 900.0])
    plain = small_unet()
    checkpointed = small_unet(use_checkpoint=True, dropout=0.3)  # eval: dropout inactive
    checkpointed.load_state_dict(plain.state_dict())
    grad_plain = torch.autograd.grad(plain(x, t).sum(), x)[0]
    grad_ckpt = torch.autograd.grad(checkpointed(x, t).sum(), x)[0]
    torch.testing.assert_close(grad_ckpt, grad_plain)
    checkpointed.train()
    assert not torch.equal(checkpointed(x, t), plain(x, t))  # dropout active in training


def test_attention_order_class_labels_and_fp16_conversion():
    legacy = small_unet(num_classes=10)
    new = small_unet(num_classes=10, use_new_attention_order=True, use_fp16=True)
    new.load_state_dict(legacy.state_dict())
    x, t, y = torch.randn(1, 3, 16, 16), torch.tensor([500.0]), torch.tensor([3])
    fp32_out = new(x, t, y)
    assert not torch.allclose(legacy(x, t, y), fp32_out)  # same weights, different head split
    assert not torch.allclose(legacy(x, t, y), legacy(x, t, torch.tensor([4])))
    with pytest.raises(ValueError, match="class-conditional"):
        legacy(x, t)
    new.convert_to_fp16()
    assert new.inner_dtype == torch.float16
    assert new.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert new.middle_block[1].qkv.weight.dtype == torch.float16
    assert new.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # GroupNorm stays fp32
    assert new.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32  # Linear stays fp32
    assert new.time_embed[0].weight.dtype == torch.float32 and new.out[2].weight.dtype == torch.float32
    # half-precision inner blocks: fp32 in and out, close to the fp32 result, gradients reach the input
    x_in = x.clone().requires_grad_(True)
    fp16_out = new(x_in, t, y)
    assert fp16_out.dtype == torch.float32
    torch.testing.assert_close(fp16_out, fp32_out, rtol=2e-2, atol=2e-2)
    grad = torch.autograd.grad(fp16_out.sum(), x_in)[0]
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    new.convert_to_fp32()
    assert new.inner_dtype == torch.float32 and new.middle_block[1].qkv.weight.dtype == torch.float32


def test_num_heads_without_head_channels():
    with torch.device("meta"):
        model = unet_from_flags({**ADM256_FLAGS, "image_size": 64, "num_head_channels": -1, "num_heads": 4})
    blocks = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    assert blocks and all(b.num_heads == 4 for b in blocks)


def test_a_forward_on_the_meta_device_gives_shapes():
    # bench/edit_bench.py counts FLOPs this way; autocast has no meta device to ask about
    with torch.device("meta"):
        unet = unet_from_flags({**ADM256_FLAGS, "image_size": 64, "num_channels": 64, "use_fp16": False})
        out = unet(torch.empty(1, 3, 64, 64), torch.zeros(1))
    assert out.device.type == "meta" and tuple(out.shape) == (1, 6, 64, 64)
