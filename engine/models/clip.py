"""CLIP through open_clip: image/text encoders, tokenizer and CLIP normalisation; LPIPS built lazily.

Weights come only from local files (the weights folder): OpenAI's TorchScript release file
(``ViT-B-16.pt``) or a plain state_dict (the ``tiny`` preset); nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from engine.errors import EngineError, WeightsCorruptError

if TYPE_CHECKING:
    from engine.models.registry import ModelSpec

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# keys of OpenAI's TorchScript file that are not parameters of the model
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


def build_open_clip(config: dict, half: bool = False) -> torch.nn.Module:
    """An ``open_clip.CLIP`` from a config dict (embed_dim, vision_cfg, text_cfg, quick_gelu).

    ``half``: its LayerNorms compute in fp32 whatever the input (open_clip's LayerNormFp32, as OpenAI's
    CLIP does under fp16), so the weights may later be converted to bf16/fp16; for fp32 inputs they are
    the same arithmetic as the plain ones. The weights themselves are built fp32 either way.
    """
    import open_clip

    vision_cfg = dict(config["vision_cfg"])
    text_cfg = dict(config["text_cfg"])
    return open_clip.CLIP(
        embed_dim=int(config["embed_dim"]),
        vision_cfg=open_clip.CLIPVisionCfg(**vision_cfg),
        text_cfg=open_clip.CLIPTextCfg(**text_cfg),
        quick_gelu=bool(config.get("quick_gelu", False)),
        cast_dtype=torch.float16 if half else None,
    )


def is_torchscript_archive(path: Path) -> bool:
    """OpenAI's CLIP release files are TorchScript archives (they hold ``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Parameters from OpenAI's TorchScript file or a plain state_dict file, on the CPU, as fp32."""
    try:
        if is_torchscript_archive(path):
            # the file's SHA-256 was verified before we get here, so loading its TorchScript is safe
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a damaged archive
        raise WeightsCorruptError(f"Could not read the CLIP weights {path}: {exc}") from exc
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    return {k: v.float() for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}


# Devices whose adaptive_avg_pool2d handles sizes that do not divide (Apple MPS does not: torch's own MPS
# tests mark it an expected failure). Elsewhere the same averages are taken as two matrix products.
_ADAPTIVE_POOL_DEVICES = ("cpu", "cuda")


@functools.lru_cache(maxsize=32)
def averaging_matrix(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[out, in]: row i averages input cells floor(i*in/out) .. ceil((i+1)*in/out) - 1, the windows of
    adaptive average pooling. Built on the CPU in float64, cast there, then moved (MPS has no float64)."""
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.to(dtype).to(device)


def pool_method(device: torch.device) -> str:
    return "adaptive" if device.type in _ADAPTIVE_POOL_DEVICES else "matrix"


def area_downsample(images: torch.Tensor, size: int, method: Optional[str] = None) -> torch.Tensor:
    """Adaptive average pooling of [B, C, H, W] to [B, C, size, size], with gradients, on every device.

    ``method`` "adaptive" is torch's adaptive_avg_pool2d (the reference's op, kept where it runs so the
    results there are unchanged); "matrix" is A_h @ x @ A_w^T with fixed averaging matrices (equal to it
    up to rounding). None picks "adaptive" on CPU and CUDA, "matrix" elsewhere (MPS).
    """
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if method is None:
        method = pool_method(images.device)
    if method == "adaptive":
        return F.adaptive_avg_pool2d(images, (size, size))
    if method != "matrix":
        raise ValueError(f"unknown pooling method {method!r}")
    rows = averaging_matrix(int(height), size, images.device, images.dtype)
    cols = averaging_matrix(int(width), size, images.device, images.dtype)
    with torch.autocast(device_type=images.device.type, enabled=False):  # averages stay in the input dtype
        return rows @ images @ cols.T


class ClipModel:
    """An open_clip CLIP model in eval mode with frozen weights.

    ``encode_image`` takes images in [0, 1] ([B, 3, H, W]), resizes them to ``image_size`` when needed
    (adaptive average pooling when shrinking, as the reference does), applies CLIP normalisation, and
    returns L2-normalised fp32 embeddings; gradients flow back to the images.
    """

    def __init__(self, model: torch.nn.Module, config: dict, device: torch.device):
        import open_clip

        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.device = device
        self.image_size = int(config["vision_cfg"]["image_size"])
        self.context_length = int(config["text_cfg"].get("context_length", 77))
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        self.mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)
        self._fp32_weights: Optional[dict[str, torch.Tensor]] = None  # exact weights while converted

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoders run in (of their conv / linear weights)."""
        return self.model.visual.conv1.weight.dtype

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Convert the weights once to ``dtype`` (open_clip's low-precision conversion: convs, linears,
        attention, projections; LayerNorms stay fp32), or back to fp32. The first conversion away from
        fp32 keeps a CPU copy of the weights, so fp32 is restored exactly."""
        if dtype == self.dtype:
            return
        import open_clip

        parameters = dict(self.model.named_parameters())
        if self._fp32_weights is None:
            # weights converted elsewhere (no copy kept) come back as exactly as their precision allows
            self._fp32_weights = {
                name: param.detach().to("cpu", torch.float32, copy=True) for name, param in parameters.items()
            }
        for name, param in parameters.items():
            param.data = self._fp32_weights[name].to(param.device)
        if dtype == torch.float32:
            self._fp32_weights = None
        else:
            open_clip.model.convert_weights_to_lp(self.model, dtype=dtype)

    @classmethod
    def from_state_dict(
        cls, config: dict, state_dict: dict[str, torch.Tensor], device: torch.device, half: bool = False
    ) -> ClipModel:
        """Build on the meta device and assign the loaded tensors (no second copy of the weights).

        ``half``: convert the weights to fp16 after loading (``set_dtype`` changes that later)."""
        with torch.device("meta"):
            model = build_open_clip(config, half=True)  # fp32 norms: any precision can be set later
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as exc:
            raise WeightsCorruptError(
                f"The CLIP weights do not match the configured architecture: {exc}"
            ) from exc
        model = _materialise_buffers(model, config, True)
        model.to(device)
        clip = cls(model, config, device)
        if half:
            clip.set_dtype(torch.float16)
        return clip

    @classmethod
    def from_file(
        cls, config: dict, path: Path, device: torch.device, half: bool = False
    ) -> ClipModel:
        """fp32 weights unless ``half``; an edit sets the precision it runs in (``set_dtype``)."""
        return cls.from_state_dict(config, read_clip_state_dict(path), device, half=half)

    def normalize(self, images_0_1: torch.Tensor) -> torch.Tensor:
        return (images_0_1 - self.mean.to(images_0_1.dtype)) / self.std.to(images_0_1.dtype)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if images.shape[-2:] == (size, size):
            return images
        if images.shape[-2] >= size and images.shape[-1] >= size:
            return area_downsample(images, size)
        return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)

    def encode_image(self, images_0_1: torch.Tensor) -> torch.Tensor:
        if images_0_1.ndim != 4 or images_0_1.shape[1] != 3:
            raise EngineError(f"CLIP expects images [B, 3, H, W], got {tuple(images_0_1.shape)}")
        x = self.normalize(self.resize(images_0_1.to(self.device).float()))
        return self.encode_normalized(x)

    def encode_normalized(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images that are already resized and CLIP-normalised (e.g. by the augmentation code)."""
        features = self.model.encode_image(images.to(self.dtype)).float()
        return F.normalize(features, dim=-1)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts)).to(self.device)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        with torch.no_grad():
            features = self.model.encode_text(self.tokenize(prompts)).float()
        return F.normalize(features, dim=-1)


def _materialise_buffers(model: torch.nn.Module, config: dict, half: bool) -> torch.nn.Module:
    """Non-persistent buffers (the text causal mask) are not in the state_dict: rebuild them on the CPU."""
    meta_buffers = [name for name, b in model.named_buffers() if b.is_meta]
    if meta_buffers:
        reference = build_open_clip(_shrunk(config), half=half)
        fresh = dict(reference.named_buffers())
        for name in meta_buffers:
            module_name, _, buffer_name = name.rpartition(".")
            owner = model.get_submodule(module_name) if module_name else model
            owner.register_buffer(buffer_name, fresh[name].clone(), persistent=False)
    return model


def _shrunk(config: dict) -> dict:
    """Same buffer shapes, far fewer parameters: only the context length shapes the attention mask."""
    return {
        "embed_dim": 8,
        "quick_gelu": config.get("quick_gelu", False),
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64},
        "text_cfg": {
            "context_length": config["text_cfg"].get("context_length", 77),
            "vocab_size": 16,
            "width": 64,
            "heads": 1,
            "layers": 1,
        },
    }


_LPIPS_CACHE: dict[Any, Any] = {}
LPIPS_BACKBONE_MODEL = "lpips_vgg16"  # models/specs/lpips_vgg16.json: torchvision's VGG16 ImageNet file


def vgg16_features_to_lpips(net: torch.nn.Module, vgg_state_dict: dict[str, torch.Tensor]) -> dict:
    """The LPIPS backbone's state_dict taken from a torchvision ``vgg16()`` state_dict.

    lpips' ``pretrained_networks.vgg16`` puts ``features[i]`` into ``slice1..slice5`` under the name
    ``str(i)`` (slices 0-3, 4-8, 9-15, 16-22, 23-29), so ``sliceK.i.weight`` is ``features.i.weight``.
    """
    mapped = {}
    for key, target in net.state_dict().items():
        _slice, index, param = key.split(".", 2)
        source = f"features.{index}.{param}"
        if source not in vgg_state_dict:
            raise WeightsCorruptError(f"The VGG16 weights have no {source!r} (needed for LPIPS {key!r})")
        value = vgg_state_dict[source]
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsCorruptError(
                f"The VGG16 weights' {source!r} has shape {tuple(value.shape)}, LPIPS expects "
                f"{tuple(target.shape)}: this is not torchvision's vgg16"
            )
        mapped[key] = value.float()
    return mapped


def lpips_backbone_path(
    spec: Optional[ModelSpec] = None, weights_dir: Union[str, Path, None] = None
) -> Path:
    """The verified VGG16 file; a clear WeightsMissingError (file, folder, URL, command) when absent."""
    from engine.errors import WeightsMissingError
    from engine.models.registry import load_model_spec
    from engine.models.weights import verify

    spec = spec if spec is not None else load_model_spec(LPIPS_BACKBONE_MODEL)
    try:
        return verify(spec, weights_dir)
    except WeightsMissingError as exc:
        size = f", about {spec.size_bytes / 2**20:.0f} MB" if spec.size_bytes else ""
        raise WeightsMissingError(
            "LPIPS (the Algorithm 1 baseline / background preservation loss) needs the VGG16 ImageNet "
            f"backbone file{size}; download it with `python -m engine download` (or the preset's "
            f"`python -m engine download PRESET`).\n{exc}"
        ) from None


def get_lpips(
    net: str = "vgg",
    device: Optional[torch.device] = None,
    pretrained_backbone: bool = True,
    backbone_spec: Optional[ModelSpec] = None,
    weights_dir: Union[str, Path, None] = None,
) -> torch.nn.Module:
    """LPIPS (only the Algorithm 1 baseline needs it), built on first use and cached.

    The linear heads ship inside the ``lpips`` package. The VGG16 backbone comes from the weights
    folder (``lpips_vgg16``: ``backbone_spec`` or the built-in spec, in ``weights_dir`` or the default
    folder), SHA-256 verified; torchvision never downloads anything. ``pretrained_backbone=False`` gives
    a random backbone of any lpips net and needs no file (the ``tiny`` / ``toy`` presets, tests).
    """
    if pretrained_backbone and net != "vgg":
        raise EngineError(
            f"LPIPS net {net!r} has no managed backbone file (only 'vgg': lpips_vgg16); "
            "use net='vgg', or pretrained_backbone=False for a random backbone"
        )
    path = lpips_backbone_path(backbone_spec, weights_dir) if pretrained_backbone else None
    key = (net, str(device), str(path))
    if key not in _LPIPS_CACHE:
        import lpips

        # pnet_rand=True: torchvision builds vgg16 without weights (no download); ours are loaded below
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        if path is not None:
            try:
                vgg_state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many kinds on a damaged file
                raise WeightsCorruptError(f"Could not read the VGG16 weights {path}: {exc}") from exc
            model.net.load_state_dict(vgg16_features_to_lpips(model.net, vgg_state_dict), strict=True)
        model = model.eval().requires_grad_(False)
        if device is not None:
            model = model.to(device)
        _LPIPS_CACHE[key] = model
    return _LPIPS_CACHE[key]
