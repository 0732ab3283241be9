"""The seam after decoding: the VAE redraws the untouched background inside the selection a few levels off
(toy-latent: a background seam of 18 levels at the selection's border, the paper's pixel-space method 6),
and the composite then shows a faint box. Four levers, on the decoded candidates at the model's size:

  residual   the VAE's own error on this source, r = x - D(E(x)), added back where nothing was drawn:
                 x' = D(z) + w * r,   w = 1 - |D(z) - D(E(x))| / tolerance, clamped to 0..1 per pixel
             where the candidate kept the background, D(z) ~ D(E(x)) and x' ~ x; a drawn object (far from
             the reconstruction) gets none of it.
  colour     the candidate's LAB mean and standard deviation matched to the source's over the undrawn
             pixels of a ring just inside the selection's border (the leading Krita plugin's colour match,
             there over the whole image), applied to the whole inside.
  band       the candidate faded into the source over a band just inside the border (the leading Krita
             plugin's eroded-and-blurred composite mask, here a smooth ramp of the distance to the border),
             its width a share of the selection's size, so the border itself is the source's and no step
             shows there; what the candidate drew (far from the source in RGB or in hue) is spared.

  poisson    Poisson cloning (Perez, Gangnet, Blake 2003) of the candidate into the source: the candidate's
             own gradients between inside pixels, the source's values across the border (the candidate's
             step across it is dropped: it is the seam). Solved as a correction added to the candidate
             (Jacobi relaxation, coarse to fine): a redraw a few levels off is lifted back to the source's
             levels, smoothly, while every edge the candidate drew inside stays an edge.

``seam_fix`` names one lever or several joined by "+" (applied in the order colour, residual, poisson,
band).

Both only change pixels inside the selection: the composite (shared/results.py) keeps the source outside.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.contrib import distance_transform

from engine.editing.shared.params import SEAM_LEVERS as LEVERS

RESIDUAL_TOLERANCE = 0.2  # |D(z) - D(E(x))| (mean over RGB, [-1, 1] units) from which a pixel counts as drawn
RING_FRACTION = 1 / 16  # the colour match's ring: this share of the model's side, at least 2 px
STD_RATIO = (0.5, 2.0)  # the colour match's std scale is kept in this range (a flat ring has tiny std)
BAND_FRACTION = 0.4  # the band's width: this share of the selection's side (sqrt of its area), >= 1 px


def levers(how: str) -> List[str]:
    """The levers of a ``seam_fix`` value ("off": none); ValueError names an unknown one."""
    if how == "off":
        return []
    names = how.split("+")
    unknown = [name for name in names if name not in LEVERS]
    if unknown or not names:
        raise ValueError(f"unknown seam lever {'+'.join(unknown) or how!r}; levers: {', '.join(LEVERS)}")
    return [name for name in LEVERS if name in names]


def reads_reconstruction(how: str) -> bool:
    """Whether the levers of ``how`` need D(E(source)) (colour and residual do; poisson and band do not)."""
    return bool({"colour", "residual"} & set(levers(how)))


def border_distance(mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Each pixel's distance to the selection's border [1, 1, H, W] (0 outside, 1 on the first row inside)
    and the selection's side (sqrt of its area), both in pixels. Measured on the mask pooled to at most
    64 px (a document-size selection costs milliseconds), then upsampled: the ramps are smooth at that scale
    anyway."""
    support = (mask > 0).float()  # a soft selection: the ramp from where it starts
    pool = max(1, -(-max(mask.shape[-2:]) // 64))
    small = -F.max_pool2d(-support, pool, ceil_mode=True) if pool > 1 else support
    # padded with unselected pixels, so a selection touching the image's edge ramps from it too
    distance = distance_transform(1 - F.pad(small, (1, 1, 1, 1)))[..., 1:-1, 1:-1] * pool
    if pool > 1:
        distance = F.interpolate(distance, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    return distance, float(support.sum()) ** 0.5


def band(mask: torch.Tensor) -> torch.Tensor:
    """The composite mask [1, 1, H, W]: 0 on the selection's border rising smoothly (smoothstep of the
    distance to the border) to 1 a band's width inside, so the band's inner part keeps the candidate whole;
    times the selection's values."""
    distance, side = border_distance(mask)
    t = (distance / max(1.0, side * BAND_FRACTION)).clamp(0, 1)
    return t * t * (3 - 2 * t) * mask


def undrawn(decoded: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] in 0..1: 1 where a candidate is its source's reconstruction, 0 where it drew."""
    distance = (decoded - reconstruction).abs().mean(dim=1, keepdim=True)
    return (1.0 - distance / RESIDUAL_TOLERANCE).clamp(0.0, 1.0)


def lab(image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] as LAB (kornia's ranges: L 0..100, a and b about -128..127)."""
    return rgb_to_lab((image.clamp(-1, 1) + 1) / 2)


DRAWN = (0.35, 0.7)  # |candidate - source| (mean over RGB, [-1, 1] units): from background redraw to object
DRAWN_CHROMA = (20.0, 40.0)  # the same in LAB chroma (a, b): a new hue is drawn even where RGB is close
EDGE_FRACTION = 0.1  # the RGB reading ramps in over this share of the side inside the border


def drawn(decoded: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] in 0..1: 1 where a candidate drew something that is not the source's background, 0 where
    it only redrew the background a few levels off; the band spares the former. The larger of two readings:
    the mean RGB distance (large lightness changes: a black object on a pale wall) and the LAB chroma
    distance (a new hue: the RGB mean alone missed saturated objects on dark backgrounds, blue on
    near-black, whose edges the band then faded away). The VAE's redraw stays below both and fades. The
    RGB reading ramps in over the first EDGE_FRACTION of the side inside the border: there a lightness-only
    change is mostly the dark or grey halo a model paints around its object, which would show as a step
    against the untouched outside; a new hue is spared up to the border."""
    low, high = DRAWN
    rgb = ((decoded - source).abs().mean(dim=1, keepdim=True) - low) / (high - low)
    distance, side = border_distance(mask)
    rgb = rgb.clamp(0.0, 1.0) * ((distance - 0.5) / max(0.5, side * EDGE_FRACTION)).clamp(0.0, 1.0)
    low, high = DRAWN_CHROMA
    ab = (lab(decoded) - lab(source))[:, 1:]
    chroma = (ab.square().sum(dim=1, keepdim=True).sqrt() - low) / (high - low)
    return torch.maximum(rgb, chroma).clamp(0.0, 1.0)


def border_ring(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of ``mask`` [1, 1, H, W] (binary) within the ring width of its border."""
    width = max(2, round(mask.shape[-1] * RING_FRACTION))
    kernel = 2 * width + 1
    eroded = -F.max_pool2d(-mask, kernel, stride=1, padding=width)
    return mask * (1 - eroded)


def match_colour(
    decoded: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """The colour lever: each candidate's LAB statistics over the ring's undrawn pixels (``weight`` > 0.5)
    moved to the source's over the same pixels; candidates with fewer than 8 such pixels are left as they
    are."""
    ring = border_ring(mask)
    decoded_lab, source_lab = lab(decoded), lab(source)[0]
    out = []
    for i in range(decoded.shape[0]):
        where = (ring[0, 0] > 0) & (weight[i, 0] > 0.5)
        if int(where.sum()) < 8:
            out.append(decoded[i])
            continue
        got, want = decoded_lab[i][:, where], source_lab[:, where]
        scale = (want.std(dim=1) / got.std(dim=1).clamp(min=1e-3)).clamp(*STD_RATIO)
        centred = decoded_lab[i] - got.mean(dim=1)[:, None, None]
        moved = centred * scale[:, None, None] + want.mean(dim=1)[:, None, None]
        out.append(lab_to_rgb(moved[None])[0] * 2 - 1)
    return torch.stack(out)


def membrane(
    source: torch.Tensor, decoded: torch.Tensor, mask: torch.Tensor, sweeps: int = 100
) -> torch.Tensor:
    """Poisson cloning's correction c [B, C, H, W]: f = decoded + c keeps the candidate's gradients between
    pixels of ``mask`` [1, 1, H, W] and the source's own gradient across its border (the candidate's step
    there is the seam), with f = source outside. Jacobi on
        c_p = mean over the 4 neighbours q of  (c_q if q is inside, else source_p - decoded_p)
    solved on a half-size grid first (down to 8 px) so the relaxation starts near the answer; 0 outside."""
    inside = mask > 0.5
    if min(decoded.shape[-2:]) > 8:
        half = [F.avg_pool2d(x, 2, ceil_mode=True) for x in (source, decoded)]
        core = -F.max_pool2d(-mask, 2, ceil_mode=True)  # cells wholly inside: their own across value
        coarse = membrane(*half, core, sweeps)
        c = F.interpolate(coarse, size=decoded.shape[-2:], mode="bilinear", align_corners=False)
    else:
        c, sweeps = torch.zeros_like(decoded), sweeps * 4
    c = c * inside
    across = source - decoded  # a neighbour outside: the border pixel takes the source's step to it
    padded_inside = F.pad(inside.float(), (1, 1, 1, 1), mode="replicate") > 0.5
    shifts = [(slice(None, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
              (slice(1, -1), slice(None, -2)), (slice(1, -1), slice(2, None))]  # fmt: skip
    for _ in range(sweeps):
        padded = F.pad(c, (1, 1, 1, 1), mode="replicate")
        total = torch.zeros_like(c)
        for rows, columns in shifts:
            total = total + torch.where(padded_inside[..., rows, columns], padded[..., rows, columns], across)
        c = torch.where(inside, total / 4, torch.zeros_like(c))
    return c


def fix_seam(
    how: str,
    decoded: torch.Tensor,
    reconstruction: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The candidates [B, 3, H, W] with the levers of ``how`` applied, clamped to [-1, 1]; the
    ``reconstruction`` D(E(source)) is read by colour and residual only (None will do for band)."""
    chosen = levers(how)
    if not chosen:
        return decoded
    if "colour" in chosen:
        decoded = match_colour(decoded, source, mask, undrawn(decoded, reconstruction))
    if "residual" in chosen:
        decoded = decoded + undrawn(decoded, reconstruction) * (source - reconstruction)
    if "poisson" in chosen:
        decoded = decoded + membrane(source, decoded, mask)
    if "band" in chosen:
        fade = torch.maximum(band(mask), drawn(decoded, source, mask))
        decoded = source + fade * (decoded - source)
    return decoded.clamp(-1, 1)
