"""The ADM UNet ("guided-diffusion" architecture), written to load OpenAI's published checkpoints.

Module and parameter names follow guided-diffusion's ``UNetModel`` exactly, so
``256x256_diffusion_uncond.pt`` (and the other ADM checkpoints) load with ``strict=True``.
Only 2-D images are supported (the published image models are all 2-D).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# re-exported: the attention arithmetic lives in its own module
from engine.models.attention import attention_reference, qkv_attention, split_heads  # noqa: F401

NUM_CLASSES = 1000  # ImageNet classes of the class-conditional checkpoints

# channel_mult the reference derives from image_size when the flag is empty
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [B, dim]: cos half first, then sin half (the checkpoints were trained so)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 whatever the input dtype, as the reference does under fp16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise (the reference's init for the last conv of each residual branch)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes the embedding to the children that take it (keys stay ``N.0``, ``N.1``...)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest 2x, then an optional 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv, or 2x2 average pooling without a conv (key ``op``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without a conv cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with timestep conditioning, optional up/down sampling on both paths."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: Optional[int] = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # resample between the norm/activation and the conv, on both paths
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (keys ``norm``, ``qkv``, ``proj_out``)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.legacy_order = not use_new_attention_order
        self.use_sdpa = True
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        h = self.proj_out(qkv_attention(qkv, self.num_heads, self.legacy_order, self.use_sdpa))
        return (x + h).reshape(b, c, *spatial)


def _inner_conv_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The conv weights and biases of the inner blocks: what guided-diffusion's convert_to_fp16 casts
    (norms, linear layers, time_embed and the output layer stay fp32)."""
    found = []
    for part in ("input_blocks", "middle_block", "output_blocks"):
        for name, layer in getattr(model, part).named_modules():
            if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                found += [(f"{part}.{name}.{p}", param) for p, param in layer.named_parameters(recurse=False)]
    return found


def _fp32_region(x: torch.Tensor):
    """Autocast off for the layers the reference keeps in fp32, when a caller runs the UNet under it.
    A device autocast does not know (the meta device that bench/edit_bench.py counts FLOPs on) has none."""
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()


class UNetModel(nn.Module):
    """The ADM UNet with attention and timestep embedding (guided-diffusion's argument names).

    ``attention_resolutions`` holds downsample rates (e.g. {8, 16, 32} for 256 px and "32,16,8").
    ``use_fp16`` is recorded; the weights are cast by ``convert_to_fp16()`` after loading, as in the
    reference (the loader does that on CUDA only, since half convolutions are slow or missing on CPU).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: Optional[int] = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if dims != 2:
            raise ValueError("only 2-D UNets are supported")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_resolutions = set(int(r) for r in attention_resolutions)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.use_fp16 = use_fp16
        self.inner_dtype = torch.float32  # dtype the blocks run in (set_inner_dtype)
        self._fp32_weights: Optional[dict[str, torch.Tensor]] = None  # exact inner weights while converted
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.num_heads_upsample = num_heads_upsample

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        def res_block(ch_in: int, ch_out: int, **updown: bool) -> ResBlock:
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                out_channels=ch_out,
                use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm,
                **updown,
            )

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch,
                num_heads=heads,
                num_head_channels=num_head_channels,
                use_checkpoint=use_checkpoint,
                use_new_attention_order=use_new_attention_order,
            )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch)
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = input_block_chans.pop()
                layers = [res_block(ch + skip_ch, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )

    def set_inner_dtype(self, dtype: torch.dtype) -> None:
        """Run the inner blocks in ``dtype``: their conv weights are converted once, here (the reference's
        use_fp16, in bf16 too), not re-cast on every forward as autocast does. The first conversion away
        from fp32 keeps a CPU copy of those weights, so converting back to fp32 restores them exactly."""
        if dtype == self.inner_dtype:
            return
        parameters = _inner_conv_parameters(self)
        if self._fp32_weights is None:
            self._fp32_weights = {
                name: param.detach().to("cpu", torch.float32, copy=True) for name, param in parameters
            }
        for name, param in parameters:
            param.data = self._fp32_weights[name].to(device=param.device, dtype=dtype)
        if dtype == torch.float32:
            self._fp32_weights = None
        self.inner_dtype = dtype

    def convert_to_fp16(self) -> None:
        self.set_inner_dtype(torch.float16)

    def convert_to_fp32(self) -> None:
        self.set_inner_dtype(torch.float32)

    def set_sdpa(self, enabled: bool) -> None:
        """Choose torch's fused attention (default) or the explicit reference formula."""
        for module in self.modules():
            if isinstance(module, AttentionBlock):
                module.use_sdpa = enabled

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x: [B, C, H, W]; timesteps: [B] (0..1000 scale); y: [B] class labels iff class-conditional."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass y if and only if the model is class-conditional")
        with _fp32_region(x):  # the embedding and the output layer stay fp32, as in the reference
            emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
            if self.num_classes is not None:
                assert y is not None
                emb = emb + self.label_emb(y)
        skips = []
        h = x.type(self.inner_dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        with _fp32_region(x):
            return self.out(h.type(x.dtype))


def _parse_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(value)


def channel_mult_for(image_size: int, channel_mult: object = "") -> tuple[float, ...]:
    """The flag's channel_mult, or the reference's default for 64/128/256/512 when it is empty."""
    if isinstance(channel_mult, (list, tuple)):
        return tuple(channel_mult)
    if channel_mult in ("", None):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}; give channel_mult")
        return DEFAULT_CHANNEL_MULT[image_size]
    return tuple(float(m) if "." in m else int(m) for m in str(channel_mult).split(","))


# the reference's model_and_diffusion_defaults() for the model part
MODEL_FLAG_DEFAULTS: dict = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
}


def unet_from_flags(flags: dict) -> UNetModel:
    """Build a UNet from the flag dictionary the checkpoints are published with (guided-diffusion names).

    Unknown keys (e.g. the diffusion flags) are ignored, so one dict can hold both.
    """
    f = {**MODEL_FLAG_DEFAULTS, **{k: v for k, v in flags.items() if k in MODEL_FLAG_DEFAULTS}}
    image_size = int(f["image_size"])
    attention = f["attention_resolutions"]
    resolutions = (
        [int(r) for r in attention.split(",") if r.strip()] if isinstance(attention, str) else attention
    )
    for r in resolutions:
        if r <= 0 or image_size % r:
            raise ValueError(f"attention resolution {r} does not divide image_size {image_size}")
    return UNetModel(
        image_size=image_size,
        in_channels=3,
        model_channels=int(f["num_channels"]),
        out_channels=6 if _parse_bool(f["learn_sigma"]) else 3,
        num_res_blocks=int(f["num_res_blocks"]),
        attention_resolutions=[image_size // r for r in resolutions],
        dropout=float(f["dropout"]),
        channel_mult=channel_mult_for(image_size, f["channel_mult"]),
        num_classes=NUM_CLASSES if _parse_bool(f["class_cond"]) else None,
        use_checkpoint=_parse_bool(f["use_checkpoint"]),
        use_fp16=_parse_bool(f["use_fp16"]),
        num_heads=int(f["num_heads"]),
        num_head_channels=int(f["num_head_channels"]),
        num_heads_upsample=int(f["num_heads_upsample"]),
        use_scale_shift_norm=_parse_bool(f["use_scale_shift_norm"]),
        resblock_updown=_parse_bool(f["resblock_updown"]),
        use_new_attention_order=_parse_bool(f["use_new_attention_order"]),
    )
