"""The latent detail stage's CPU cost against the first pass, on the toy world: toy-latent (32 px) edits
of 128 px held-out scenes (a 96 px box, 3x), one candidate, detail off and on at the default strength, the
same seeds; CPU seconds of each edit() (process time, one thread), paired per scene.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/latent_detail_cost.py --scenes 20 \\
        --json docs/results/detail/detail-toy-latent-cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy-latent")
    parser.add_argument("--first", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import torch

    from engine.editing.editor import EditParams, edit
    from engine.models.loading import load_models
    from toyworld.evaluate import preset_edit_defaults
    from toyworld.scenes import edit_case

    torch.set_num_threads(1)
    models = load_models(args.models, device="cpu")
    base = {**preset_edit_defaults(args.models), "batch_size": 1, "iterations_num": 1}
    rows = []
    for index in range(args.first, args.first + args.scenes):
        case = edit_case(index, 128)
        seconds = {}
        for mode in ("off", "on"):
            seed = 10_000 + 100 * index
            params = EditParams(**{**base, "prompt": case.prompt, "seed": seed, "detail": mode})
            began = time.process_time()
            result = edit(case.image, case.mask, models, params)
            seconds[mode] = time.process_time() - began
        note = next(n for n in result.notes if n.startswith("full-resolution detail"))
        rows.append({"scene": index, **seconds, "stage_over_first_pass": seconds["on"] / seconds["off"] - 1,
                     "plan": note})  # fmt: skip
    ratios = [r["stage_over_first_pass"] for r in rows]
    report = {
        "what": "CPU seconds of a toy-latent edit with the latent detail stage off and on (one candidate)",
        "machine": "2-core Intel Xeon, no GPU, one thread",
        "torch": torch.__version__,
        "stage_over_first_pass": {
            "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)
        },
        "rows": rows,
    }
    print(json.dumps(report["stage_over_first_pass"]), rows[0]["plan"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
