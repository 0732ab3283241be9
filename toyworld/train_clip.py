"""Train the toy CLIP: open_clip's CLIP class with small towers and the standard tokenizer.

Half of every batch is whole scenes with their full captions, half is single shapes seen the way the
editor's guidance sees them (outside a square region mid-grey, extending augmentations, some noise and blur
like the blended x_in of early steps) with captions "a {colour} {shape}". Captions repeat within a batch,
so the contrastive targets are soft: every pair with the same caption counts as a match.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from toyworld.data import MASK_GREY, masked_shape_bank, scene_bank

# open_clip.CLIP(**TOY_CLIP_CONFIG) builds the model; the preset file carries this dict.
TOY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 4,
        "width": 64,
        "layers": 3,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}
TOKENIZER_NAME = "ViT-B-16"  # the standard CLIP BPE tokenizer (open_clip.get_tokenizer)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clip() -> torch.nn.Module:
    import open_clip

    return open_clip.CLIP(**TOY_CLIP_CONFIG)


def _noise_and_blur(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise on half the images and a 3x3 blur on a third: the guidance input is rarely a clean image."""
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=generator) * 0.3
    sigma = sigma * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    x = x + sigma * torch.randn(x.shape, generator=generator)
    blur = (torch.rand(b, 1, 1, 1, generator=generator) < 0.33).float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return blur * blurred + (1 - blur) * x


def train_clip(
    steps: int,
    batch_size: int = 128,
    seed: int = 0,
    size: int = 32,
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    import kornia.augmentation as K
    import open_clip

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    bank_size = max(4096, steps * batch_size // 8)
    scenes, scene_caps = scene_bank(bank_size, size, seed)
    crops, crop_caps = masked_shape_bank(bank_size, size, seed)
    captions = sorted(set(scene_caps) | set(crop_caps))
    caption_index = {c: i for i, c in enumerate(captions)}
    tokens = open_clip.get_tokenizer(TOKENIZER_NAME)(captions)
    scene_ids = torch.tensor([caption_index[c] for c in scene_caps])
    crop_ids = torch.tensor([caption_index[c] for c in crop_caps])

    model = build_clip()
    model.train()
    augment = torch.nn.Sequential(
        K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"),
        K.RandomPerspective(0.7, p=0.7),
    )
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    half = batch_size // 2
    start = time.time()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = 1e-3 * lr_at(step)
        pick_s = torch.randint(0, scenes.shape[0], (half,), generator=generator)
        pick_c = torch.randint(0, crops.shape[0], (batch_size - half,), generator=generator)
        images = torch.cat([scenes[pick_s], crops[pick_c]]).float() / 255.0
        ids = torch.cat([scene_ids[pick_s], crop_ids[pick_c]])
        # Augment the masked crops like the editor does; the border padding keeps their surround grey.
        masked = augment(images[half:] - MASK_GREY) + MASK_GREY
        images = torch.cat([images[:half], masked])
        images = _noise_and_blur(images, generator)
        unique_ids, inverse = torch.unique(ids, return_inverse=True)
        image_features = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        text_features = F.normalize(model.encode_text(tokens[unique_ids]), dim=-1)
        # Image-to-text over the batch's distinct captions; text-to-image with soft targets over images.
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss_i = F.cross_entropy(logits, inverse)
        targets_t = F.one_hot(inverse, len(unique_ids)).float().T
        targets_t = targets_t / targets_t.sum(dim=1, keepdim=True)
        loss_t = -(targets_t * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
        loss = 0.5 * (loss_i + loss_t)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            accuracy = (logits.argmax(dim=1) == inverse).float().mean().item()
            log(
                f"clip step {step}/{steps} loss {loss.item():.3f} acc {accuracy:.2f} "
                f"{time.time() - start:.0f}s"
            )
    model.eval()
    return model
