"""The ADM UNet's multi-head self-attention arithmetic on packed qkv tensors (guided-diffusion layouts).

torch's scaled_dot_product_attention picks a fused kernel (flash / memory-efficient) only for 4-D
[B, heads, tokens, channels] inputs with a contiguous last dimension; the 3-D transposed views the reference
layout gives fall back to the slow math kernel (``torch._fused_sdp_choice`` says MATH), on CUDA and on
the CPU alike. So q, k and v are handed over 4-D and contiguous.

On the CPU the math kernel is still chosen explicitly: the CPU's flash kernel is faster on attention
(1.5-2x measured, a few per cent of a step) but rounds differently, and CPU results are kept bit for bit as
they were (``CPU_SDPA_BACKENDS``; docs/performance.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# None: let torch choose on the CPU too (its flash kernel)
CPU_SDPA_BACKENDS: list | None = [SDPBackend.MATH]


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The reference formula on [N, C, T] tensors: softmax((q s)^T (k s)) with s = C^-1/4, softmax in fp32."""
    scale = 1.0 / math.sqrt(math.sqrt(q.shape[1]))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


def split_heads(qkv: torch.Tensor, num_heads: int, legacy_order: bool) -> tuple[torch.Tensor, ...]:
    """[B, 3*H*C, T] -> q, k, v as [B*H, C, T].

    Legacy order (the 256 uncond model): per head [q_h, k_h, v_h]. New order: [q (all heads), k, v].
    """
    bs, width, length = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"qkv width {width} is not divisible by 3 * {num_heads} heads")
    ch = width // (3 * num_heads)
    if legacy_order:
        return qkv.reshape(bs * num_heads, 3 * ch, length).split(ch, dim=1)
    q, k, v = qkv.chunk(3, dim=1)
    return tuple(t.reshape(bs * num_heads, ch, length) for t in (q, k, v))


def sdpa_inputs(qkv: torch.Tensor, num_heads: int, legacy_order: bool) -> tuple[torch.Tensor, ...]:
    """q, k, v as the contiguous 4-D [B, H, T, C] tensors the fused SDPA kernels take."""
    bs, _, length = qkv.shape
    heads = split_heads(qkv, num_heads, legacy_order)
    ch = heads[0].shape[1]
    return tuple(t.reshape(bs, num_heads, ch, length).transpose(-1, -2).contiguous() for t in heads)


def qkv_attention(
    qkv: torch.Tensor, num_heads: int, legacy_order: bool, use_sdpa: bool = True
) -> torch.Tensor:
    """Multi-head attention over a packed qkv tensor [B, 3*H*C, T] -> [B, H*C, T]."""
    bs, _, length = qkv.shape
    if use_sdpa:
        # SDPA's default scale 1/sqrt(C) equals the reference's C^-1/4 applied to both q and k
        q, k, v = sdpa_inputs(qkv, num_heads, legacy_order)
        if q.device.type == "cpu" and CPU_SDPA_BACKENDS is not None:
            with sdpa_kernel(CPU_SDPA_BACKENDS):
                a = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, C]
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        return a.transpose(-1, -2).reshape(bs, -1, length)
    q, k, v = split_heads(qkv, num_heads, legacy_order)
    return attention_reference(q, k, v).reshape(bs, -1, length)
