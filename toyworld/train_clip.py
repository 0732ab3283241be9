"""Train the toy CLIP: open_clip's CLIP class with small towers and the standard tokenizer.

A quarter of every batch is whole scenes with their full captions; three quarters are single shapes seen the
way the editor's guidance sees them (outside a square region mid-grey, extending augmentations, some noise
and blur) with captions "a {colour} {shape}". Given the trained toy ADM, half of those are the guidance's own
input at a random step of an edit (``GuidanceViews``: x_in from the ADM's pred_x0, under the editor's own
warps), so that, like a noise-aware classifier, the CLIP reads which shape a blurry early estimate is
heading for and its gradient can steer the outline, not only the colour.

The masked shapes are scored against every single-shape caption at once (24: six colours and the washed-out
white/grey, three shapes each), so each image always meets its hard negatives: the same colour as another
shape and the same shape in another colour. A second term scores them against the three captions of their
own colour only: with colour settled, the only way to lower it is to read the shape. Whole scenes use the
batch's distinct captions with soft targets (captions repeat within a batch).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from engine.editing.shared.augment import AFFINE_DEGREES, AFFINE_TRANSLATE, PERSPECTIVE_DISTORTION
from engine.editing.shared.augment import AUGMENT_P as EDITOR_AUGMENT_P
from toyworld.data import MASK_GREY, grey_outside, region_shape_bank, scene_bank
from toyworld.scenes import COLOURS, SHAPES

# open_clip.CLIP(**TOY_CLIP_CONFIG) builds the model; the preset file carries this dict.
TOY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    # open_clip's ModifiedResNet (a list of layers selects it): convolutions read a shape's outline from
    # few examples, where the earlier ViT with 4 px patches learned colour but hardly shape.
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
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

# The colour words of the masked-shape captions: the six shape colours and the washed-out negatives.
CROP_COLOURS: tuple[str, ...] = COLOURS + ("white", "grey")
CROP_CAPTIONS: tuple[str, ...] = tuple(f"a {c} {s}" for c in CROP_COLOURS for s in SHAPES)
SCENE_SHARE = 4  # one image in SCENE_SHARE is a whole scene, the rest masked single shapes
SHAPE_TERM_WEIGHT = 2.0  # weight of the same-colour (shape only) term
# The editor's warps (affine + perspective 0.7, each with p 0.7) hide a small shape's outline so well that
# neither tower learned shape in a CPU budget under them (zero-shot shape 45%); milder warps keep the
# views varied and leave the outline readable.
AUGMENT_P = 0.35
PERSPECTIVE = 0.4
NOISE_SIGMA = 0.15
# Share of the masked shapes shown as the guidance's own input at a random step of a toy edit (x_in from the
# ADM's pred_x0, see GuidanceViews) instead of the clean picture: the CLIP's gradient is taken on those.
GUIDANCE_VIEW_SHARE = 0.5
# The noise levels an edit visits: indices 0-19 of a 25-step respacing reach t = 791 of 1000, the same range
# as the preset's 50 steps with skip_timesteps 10 (t <= 795). A view from a level no edit visits (pure
# noise) teaches nothing, and an edit that starts there (skip_timesteps 0) gets a CLIP that never saw it.
EDIT_RESPACING = "25"
EDIT_STEPS = 20


class GuidanceViews:
    """What the guidance's CLIP call sees at step t of a toy edit, for pictures whose region holds a shape.

    x_t is the picture noised to level t (inside the region the edit's own sample, outside it the noised
    background), pred_x0 the ADM's estimate from it and x_in = pred_x0 * fac + x_t * (1 - fac), masked to the
    region: the same formula as engine.editing.paper.blended. Like a noise-aware classifier, a CLIP trained on
these     reads the shape a blurry early estimate is heading for, so its gradient can steer the outline too.
    """

    def __init__(
        self, unet: torch.nn.Module, respacing: str = EDIT_RESPACING, steps: int = EDIT_STEPS
    ) -> None:
        from engine.models.diffusion import diffusion_from_flags
        from toyworld.train_adm import TOY_DIFFUSION_FLAGS

        self.unet = unet.eval()
        self.diffusion = diffusion_from_flags({**TOY_DIFFUSION_FLAGS, "timestep_respacing": respacing})
        self.steps = steps

    @torch.no_grad()
    def __call__(
        self, pictures: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """pictures [B, 3, H, W] in [0, 1], masks [B, 1, H, W] in {0, 1} -> views in [0, 1], grey outside."""
        d = self.diffusion
        x0 = pictures * 2 - 1
        t = torch.randint(0, self.steps, (x0.shape[0],), generator=generator)
        x_t = d.q_sample(x0, t, noise=torch.randn(x0.shape, generator=generator))
        out = d.p_mean_variance(None, x_t, t, model_output=self.unet(x_t, d.model_timesteps(t)))
        fac = d.table("sqrt_one_minus_alphas_cumprod", x0.device)[t].view(-1, 1, 1, 1).float()
        x_in = out["pred_xstart"] * fac + x_t * (1 - fac)
        return ((x_in * masks + 1) / 2).clamp(0, 1)


def build_clip() -> torch.nn.Module:
    from engine.models.clip import build_open_clip

    return build_open_clip(TOY_CLIP_CONFIG)


def _warps(degrees: float, translate: float, perspective: float, p: float) -> torch.nn.Module:
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomAffine(degrees=degrees, translate=translate, p=p, padding_mode="border"),
        K.RandomPerspective(perspective, p=p),
    )


def _noise_and_blur(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise on half the images and a 3x3 blur on a third: the guidance input is rarely a clean image."""
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=generator) * NOISE_SIGMA
    sigma = sigma * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    x = x + sigma * torch.randn(x.shape, generator=generator)
    blur = (torch.rand(b, 1, 1, 1, generator=generator) < 0.33).float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return blur * blurred + (1 - blur) * x


def _soft_contrastive(logits: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Image-to-text cross entropy, and text-to-image with soft targets (every image of a caption counts)."""
    loss_i = F.cross_entropy(logits, inverse)
    targets = F.one_hot(inverse, logits.shape[1]).float().T
    present = targets.sum(dim=1) > 0  # a caption no image of the batch carries has no text-to-image term
    targets = targets[present] / targets[present].sum(dim=1, keepdim=True)
    loss_t = -(targets * F.log_softmax(logits.T[present], dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def train_clip(
    steps: int,
    batch_size: int = 96,
    seed: int = 0,
    size: int = 32,
    lr: float = 1e-3,
    log: Callable[[str], None] = print,
    unet: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """``unet``: the trained toy ADM; with it, GUIDANCE_VIEW_SHARE of the masked shapes are guidance views."""
    import open_clip

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n_scenes = batch_size // SCENE_SHARE
    n_crops = batch_size - n_scenes
    scenes, scene_caps = scene_bank(max(2048, steps * n_scenes // 8), size, seed)
    pictures, regions, crop_caps = region_shape_bank(max(4096, steps * n_crops // 8), size, seed)
    crops = grey_outside(pictures, regions)
    views = None if unet is None else GuidanceViews(unet)
    n_views = 0 if views is None else round(n_crops * GUIDANCE_VIEW_SHARE)
    # The guidance views get the editor's own warps: the gradient is taken through exactly those.
    view_augment = _warps(AFFINE_DEGREES, AFFINE_TRANSLATE, PERSPECTIVE_DISTORTION, EDITOR_AUGMENT_P)
    scene_captions = sorted(set(scene_caps))
    scene_index = {c: i for i, c in enumerate(scene_captions)}
    tokenizer = open_clip.get_tokenizer(TOKENIZER_NAME)
    scene_tokens = tokenizer(scene_captions)
    crop_tokens = tokenizer(list(CROP_CAPTIONS))
    scene_ids = torch.tensor([scene_index[c] for c in scene_caps])
    crop_ids = torch.tensor([CROP_CAPTIONS.index(c) for c in crop_caps])
    # the three captions of each crop caption's colour (rows of CROP_CAPTIONS are colour-major)
    same_colour = (crop_ids // len(SHAPES)) * len(SHAPES)

    model = build_clip()
    model.train()
    augment = _warps(AFFINE_DEGREES, AFFINE_TRANSLATE, PERSPECTIVE, AUGMENT_P)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    shape_offsets = torch.arange(len(SHAPES))
    start = time.time()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * lr_at(step)
        pick_s = torch.randint(0, scenes.shape[0], (n_scenes,), generator=generator)
        pick_c = torch.randint(0, crops.shape[0], (n_crops,), generator=generator)
        images = torch.cat([scenes[pick_s], crops[pick_c]]).float() / 255.0
        if views is not None:
            picked = pick_c[:n_views]
            images[n_scenes : n_scenes + n_views] = views(
                pictures[picked].float() / 255.0, regions[picked].float(), generator
            )
        # Augment the masked crops like the editor does; the border padding keeps their surround grey.
        masked = augment(images[n_scenes:] - MASK_GREY) + MASK_GREY
        if n_views:  # the mild warps above ran over these rows too (their draws are part of the seeded run)
            masked[:n_views] = view_augment(images[n_scenes : n_scenes + n_views] - MASK_GREY) + MASK_GREY
        images = _noise_and_blur(torch.cat([images[:n_scenes], masked]), generator)
        image_features = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        unique_ids, inverse = torch.unique(scene_ids[pick_s], return_inverse=True)
        text_features = F.normalize(
            model.encode_text(torch.cat([scene_tokens[unique_ids], crop_tokens])), dim=-1
        )
        scale = model.logit_scale.exp()
        scene_text, crop_text = text_features[: len(unique_ids)], text_features[len(unique_ids) :]
        scene_loss = _soft_contrastive(scale * image_features[:n_scenes] @ scene_text.T, inverse)
        crop_logits = scale * image_features[n_scenes:] @ crop_text.T
        targets = crop_ids[pick_c]
        crop_loss = _soft_contrastive(crop_logits, targets)
        own = same_colour[pick_c][:, None] + shape_offsets[None, :]  # [n_crops, 3] caption indices
        shape_loss = F.cross_entropy(crop_logits.gather(1, own), targets - same_colour[pick_c])
        loss = (scene_loss * n_scenes + crop_loss * n_crops) / batch_size + SHAPE_TERM_WEIGHT * shape_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            with torch.no_grad():
                hit = crop_logits.argmax(dim=1) == targets
                shape_hit = crop_logits.gather(1, own).argmax(dim=1) == targets - same_colour[pick_c]
            log(
                f"clip step {step}/{steps} loss {loss.item():.3f} crop acc {hit.float().mean():.2f} "
                f"shape acc {shape_hit.float().mean():.2f} {time.time() - start:.0f}s"
            )
    model.eval()
    return model
