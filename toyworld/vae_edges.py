"""How much a latent preset's VAE alone widens drawn edges: crops of scenes drawn 3x larger (data.crop_bank,
what the latent detail stage's tiles look like) encoded and decoded, each shape's edge width
(detail_eval.edge_width: transition pixels per outline pixel) before and after. The detail stage's output
passes through the same decoder, so its edges cannot get sharper than this round trip leaves them.

    python -m toyworld.vae_edges --models resources/models/toy-latent --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

SEED = 777  # its own crop stream: not among the training crops (seed 0) of train_latent --crop-scenes


def round_trip_widths(models: str, count: int, scale: int = 3) -> dict:
    """Edge widths of ``count`` crops and of their VAE round trips (mean over the shapes both judge)."""
    import torch
    from diffusers import AutoencoderKL

    from toyworld.data import crop_bank
    from toyworld.detail_eval import edge_width
    from toyworld.scenes import COLOURS

    vae = AutoencoderKL.from_pretrained(Path(models) / "vae").eval()
    crops = crop_bank(count, 32, SEED, scales=(scale,))
    with torch.no_grad():
        decoded = vae.decode(vae.encode(crops.float() / 127.5 - 1).latent_dist.mean).sample
    back = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    pairs = []
    for before, after in zip(crops.permute(0, 2, 3, 1).numpy(), back):
        for colour in COLOURS:
            widths = edge_width(before, colour), edge_width(after, colour)
            if None not in widths:
                pairs.append(widths)
    widths = np.array(pairs)
    return {
        "models": models,
        "crops": count,
        "scale": scale,
        "shapes": len(pairs),
        "width_source": round(float(widths[:, 0].mean()), 3),
        "width_round_trip": round(float(widths[:, 1].mean()), 3),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resources/models/toy-latent", help="a latent preset's folder")
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args(argv)
    result = round_trip_widths(args.models, args.crops)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
