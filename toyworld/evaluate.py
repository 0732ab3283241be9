"""Semantic evaluation: do Blended Diffusion edits with the toy models follow the prompt's colour?

For each held-out scene (``scenes.edit_case``: an empty square region and a target "a {colour} {shape}"),
run ``engine.editing.editor.edit`` (Algorithm 2, the engine's code unchanged) twice with the same seeds: once
with the prompt, once with an empty prompt (no guidance: plain blended inpainting). Each candidate's
edited region is judged by the fixed pixel rule ``scenes.classify_colour``, never by CLIP.

    python -m toyworld.evaluate --models resources/models/toy --scenes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from toyworld.scenes import EditCase, edit_case, region_colour

DEFAULT_MODELS = str(Path(__file__).resolve().parent.parent / "resources" / "models" / "toy")


@dataclass
class ConditionResult:
    """Hit counts of one condition (guided or unguided) over all scenes."""

    candidates: int = 0
    hits: int = 0
    top_hits: int = 0  # the rank-1 candidate of each scene
    scenes: int = 0
    background_exact: bool = True
    colours: list = field(default_factory=list)  # per scene: the classified colour of every candidate
    scores: list = field(default_factory=list)  # per scene: the engine's ranking scores, rank order

    @property
    def hit_rate(self) -> float:
        """Hit rate of a candidate picked at random (all candidates counted)."""
        return self.hits / self.candidates if self.candidates else 0.0

    @property
    def top_hit_rate(self) -> float:
        return self.top_hits / self.scenes if self.scenes else 0.0


@dataclass
class Evaluation:
    guided: ConditionResult
    unguided: ConditionResult
    scenes: int
    candidates_per_scene: int
    params: dict
    seconds: float

    def summary(self) -> str:
        g, u = self.guided, self.unguided
        return "\n".join(
            [
                f"toy semantic evaluation: {self.scenes} held-out scenes x "
                f"{self.candidates_per_scene} candidates "
                f"= {g.candidates} trials per condition ({self.seconds:.0f}s)",
                f"  guided   hit rate {g.hit_rate:6.1%} ({g.hits}/{g.candidates}); "
                f"top-ranked {g.top_hit_rate:6.1%} ({g.top_hits}/{g.scenes}); "
                f"background exact: {g.background_exact}",
                f"  unguided hit rate {u.hit_rate:6.1%} ({u.hits}/{u.candidates}); "
                f"background exact: {u.background_exact}  (chance 1/6 = 16.7%)",
            ]
        )

    def to_dict(self) -> dict:
        def condition(c: ConditionResult) -> dict:
            return {**asdict(c), "hit_rate": c.hit_rate, "top_hit_rate": c.top_hit_rate}

        return {
            "scenes": self.scenes,
            "candidates_per_scene": self.candidates_per_scene,
            "guided": condition(self.guided),
            "unguided": condition(self.unguided),
            "params": self.params,
            "seconds": self.seconds,
        }


def preset_edit_defaults(models_dir: str) -> dict:
    """The ``edit_defaults`` the preset (a name or a folder with preset.json) recommends; empty if none."""
    from engine.editing.params import preset_edit_defaults as checked
    from engine.models.registry import get_preset

    return checked(get_preset(models_dir))


def background_unchanged(source, edited, mask) -> bool:
    """True when every pixel outside the mask is byte-for-byte the source's."""
    keep = np.asarray(mask) == 0
    return bool(np.array_equal(np.asarray(source)[keep], np.asarray(edited.convert("RGB"))[keep]))


def run_condition(
    case: EditCase, models, base: dict, prompt: str, seed: int, result: ConditionResult
) -> list[Optional[str]]:
    from engine.editing.editor import EditParams, edit

    params = EditParams(**{**base, "prompt": prompt, "seed": seed})
    outcome = edit(case.image, case.mask, models, params)
    colours = [region_colour(c.image, case.box) for c in outcome.candidates]  # rank order
    result.candidates += len(colours)
    result.hits += sum(colour == case.colour for colour in colours)
    result.top_hits += colours[0] == case.colour
    result.scenes += 1
    result.background_exact &= all(
        background_unchanged(case.image, c.image, case.mask) for c in outcome.candidates
    )
    result.colours.append(colours)
    result.scores.append([c.scores for c in outcome.candidates])
    return colours


def evaluate(
    models,
    scene_count: int = 30,
    first_seed: int = 0,
    params: Optional[dict] = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Guided vs unguided hit rates on ``scene_count`` held-out scenes (same seeds for both)."""
    if scene_count < 1:
        raise ValueError("scene_count must be at least 1")
    base = dict(params or {})
    base.pop("prompt", None)
    base.pop("seed", None)
    guided, unguided = ConditionResult(), ConditionResult()
    start = time.time()
    size = int(models.image_size)
    for index in range(first_seed, first_seed + scene_count):
        case = edit_case(index, size)
        seed = 10_000 + 100 * index
        got = run_condition(case, models, base, case.prompt, seed, guided)
        plain = run_condition(case, models, base, "", seed, unguided)
        log(f"scene {index}: '{case.prompt}' guided {got} unguided {plain}")
    per_scene = guided.candidates // max(1, guided.scenes)
    return Evaluation(guided, unguided, scene_count, per_scene, base, time.time() - start)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="preset name or folder with preset.json")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an edit parameter (JSON value), e.g. --set clip_guidance_lambda=2000",
    )
    parser.add_argument("--json", help="write the full result here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")

    import torch

    from engine.models.loading import load_models

    torch.set_num_threads(args.threads)
    params = preset_edit_defaults(args.models)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs NAME=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        # timestep_respacing is a string option ("25", "ddim10") even when it looks like a number
        params[name] = value if name == "timestep_respacing" else parsed
    models = load_models(args.models, device="cpu")
    result = evaluate(models, args.scenes, args.first_seed, params)
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
