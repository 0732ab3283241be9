"""Semantic evaluation: do Blended Diffusion edits with the toy models follow the prompt's colour and shape?

For each held-out scene (``scenes.edit_case``: an empty square region and a target "a {colour} {shape}"),
run ``engine.editing.editor.edit`` (Algorithm 2, the engine's code unchanged) twice with the same seeds: once
with the prompt, once with an empty prompt (no guidance: plain blended inpainting). Each candidate's edited
region is judged without CLIP: its colour by the fixed pixel rule ``scenes.classify_colour``, its shape by
fitting the outline of the pixels of that colour (``judge.judge_shape``).

Three conditions: "guided" (every candidate, i.e. one picked at random), "top-ranked" (the engine's rank-1
candidate of each scene) and "empty prompt" (every candidate of the unguided run). Every candidate also gets
its edge seam at the selection's border (toyworld.seam) and its mean change inside the region; a condition
records the CPU seconds of its edit() calls alone (time.process_time, judges excluded).

    python -m toyworld.evaluate --scenes 120 [--empty-scenes 30] [--json result.json]
    python -m toyworld.evaluate --models toy-latent --first-seed 30 --scenes 120 --empty-scenes 0

Any preset runs: a latent one (Blended Latent Diffusion, issue 31) goes through the same edit() and judges.
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

from toyworld.judge import region_shape
from toyworld.scenes import COLOURS, SHAPES, EditCase, edit_case, region_colour
from toyworld.seam import edge_seam
from toyworld.seam import summary as seam_summary
from toyworld.thin import region_change

DEFAULT_MODELS = str(Path(__file__).resolve().parent.parent / "resources" / "models" / "toy")


@dataclass
class Trial:
    """One judged candidate: what was prompted and what the judges saw in the region."""

    scene: int
    colour: str  # prompted
    kind: str  # prompted
    rank: int  # 1 = the engine's best
    got_colour: Optional[str]
    got_shape: Optional[str]
    seam: float = 0.0  # toyworld.seam: the border step's increase over the source's, 0..255
    seam_background: Optional[float] = None  # the same over background-like border pixels only
    change: float = 0.0  # mean |RGB change| over the region's box, 0..255

    @property
    def colour_hit(self) -> bool:
        return self.got_colour == self.colour

    @property
    def shape_hit(self) -> bool:
        return self.got_shape == self.kind

    @property
    def both_hit(self) -> bool:
        return self.colour_hit and self.shape_hit


@dataclass
class Rates:
    trials: int
    colour: int
    shape: int
    both: int

    @classmethod
    def of(cls, trials: list[Trial]) -> Rates:
        return cls(
            len(trials),
            sum(t.colour_hit for t in trials),
            sum(t.shape_hit for t in trials),
            sum(t.both_hit for t in trials),
        )

    def rate(self, what: str) -> float:
        return getattr(self, what) / self.trials if self.trials else 0.0


@dataclass
class ConditionResult:
    """The judged candidates of one condition (guided or unguided) over all its scenes."""

    trials: list[Trial] = field(default_factory=list)
    scenes: int = 0
    background_exact: bool = True
    scores: list = field(default_factory=list)  # per scene: the engine's ranking scores, rank order
    edit_cpu_seconds: float = 0.0  # process CPU time inside edit() only

    def seams(self, top: bool = False) -> dict:
        """Per-candidate seam figures (all border pairs, background-like ones) summarised."""
        trials = self.top if top else self.trials
        return {
            "all": seam_summary([t.seam for t in trials]),
            "background": seam_summary([t.seam_background for t in trials]),
        }

    @property
    def candidates(self) -> int:
        return len(self.trials)

    @property
    def hits(self) -> int:
        return sum(t.colour_hit for t in self.trials)

    @property
    def top_hits(self) -> int:
        return sum(t.colour_hit for t in self.top)

    @property
    def top(self) -> list[Trial]:
        return [t for t in self.trials if t.rank == 1]

    @property
    def hit_rate(self) -> float:
        """Colour hit rate of a candidate picked at random (all candidates counted)."""
        return self.hits / self.candidates if self.candidates else 0.0

    @property
    def top_hit_rate(self) -> float:
        return self.top_hits / self.scenes if self.scenes else 0.0

    def rates(self, top: bool = False) -> Rates:
        return Rates.of(self.top if top else self.trials)

    def table(self, top: bool = False) -> dict:
        """Rates overall, per prompted colour and per prompted shape."""
        trials = self.top if top else self.trials
        return {
            "all": asdict(Rates.of(trials)),
            "per_colour": {c: asdict(Rates.of([t for t in trials if t.colour == c])) for c in COLOURS},
            "per_shape": {k: asdict(Rates.of([t for t in trials if t.kind == k])) for k in SHAPES},
        }


@dataclass
class Evaluation:
    guided: ConditionResult
    unguided: ConditionResult
    scenes: int
    candidates_per_scene: int
    params: dict
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time over every edit (guided and empty-prompt runs)

    def conditions(self) -> dict[str, Rates]:
        return {
            "guided": self.guided.rates(),
            "top-ranked": self.guided.rates(top=True),
            "empty prompt": self.unguided.rates(),
        }

    def summary(self) -> str:
        lines = [
            f"toy semantic evaluation: {self.scenes} held-out scenes x {self.candidates_per_scene} "
            f"candidates ({self.seconds:.0f}s); colour by the pixel rule, shape by outline fit (no CLIP)"
        ]
        for name, r in self.conditions().items():
            lines.append(
                f"  {name:13s} {r.trials:4d} trials: colour {r.rate('colour'):6.1%} ({r.colour}), "
                f"shape {r.rate('shape'):6.1%} ({r.shape}), colour+shape {r.rate('both'):6.1%} ({r.both})"
            )
        lines.append(
            f"  background exact: guided {self.guided.background_exact}, "
            f"empty prompt {self.unguided.background_exact}"
        )
        edited = self.guided.candidates + self.unguided.candidates
        if edited:
            lines.append(
                f"  CPU seconds per candidate: {self.cpu_seconds / edited:.3f} ({edited} candidates)"
            )
        seams = self.guided.seams()
        lines.append(f"  guided edge seam (0..255): all {seams['all']}, background {seams['background']}")
        for name, condition, top in (("guided", self.guided, False), ("top-ranked", self.guided, True)):
            table = condition.table(top)
            colours = ", ".join(
                f"{c} {_pct(v['colour'], v['trials'])}/{_pct(v['both'], v['trials'])}"
                for c, v in table["per_colour"].items()
            )
            shapes = ", ".join(
                f"{k} {_pct(v['shape'], v['trials'])}/{_pct(v['both'], v['trials'])}"
                for k, v in table["per_shape"].items()
            )
            lines.append(f"  {name} per colour (colour/both): {colours}")
            lines.append(f"  {name} per shape (shape/both): {shapes}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def condition(c: ConditionResult, top: bool = False) -> dict:
            per = c.edit_cpu_seconds / c.candidates if c.candidates else None
            return {
                "scenes": c.scenes,
                "background_exact": c.background_exact,
                **c.table(top),
                "seam": c.seams(top),
                "edit_cpu_seconds": round(c.edit_cpu_seconds, 2),
                "cpu_seconds_per_candidate": round(per, 4) if per is not None else None,
            }

        return {
            "scenes": self.scenes,
            "candidates_per_scene": self.candidates_per_scene,
            "guided": condition(self.guided),
            "top_ranked": condition(self.guided, top=True),
            "empty_prompt": condition(self.unguided),
            "trials": {
                "guided": [asdict(t) for t in self.guided.trials],
                "empty_prompt": [asdict(t) for t in self.unguided.trials],
            },
            "scores": self.guided.scores,
            "params": self.params,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }


def _pct(hits: int, trials: int) -> str:
    return f"{hits / trials:.0%}" if trials else "-"


def preset_edit_defaults(models_dir: str) -> dict:
    """The ``edit_defaults`` the preset (a name or a folder with preset.json) recommends; empty if none."""
    from engine.editing.shared.params import preset_edit_defaults as checked
    from engine.models.registry import get_preset

    return checked(get_preset(models_dir))


def background_unchanged(source, edited, mask) -> bool:
    """True when every pixel outside the mask is byte-for-byte the source's."""
    keep = np.asarray(mask) == 0
    return bool(np.array_equal(np.asarray(source)[keep], np.asarray(edited.convert("RGB"))[keep]))


def run_condition(
    case: EditCase, models, base: dict, prompt: str, seed: int, result: ConditionResult
) -> list[tuple[Optional[str], Optional[str]]]:
    """Edit one scene, judge every candidate (rank order) and add them to ``result``."""
    from engine.editing.editor import EditParams, edit

    params = EditParams(**{**base, "prompt": prompt, "seed": seed})
    cpu_start = time.process_time()
    outcome = edit(case.image, case.mask, models, params)
    result.edit_cpu_seconds += time.process_time() - cpu_start
    judged = []
    for candidate in outcome.candidates:
        colour = region_colour(candidate.image, case.box)
        shape = region_shape(candidate.image, case.box, colour) if colour else None
        judged.append((colour, shape))
        seam = edge_seam(case.image, candidate.image, case.mask)
        change = region_change(case.image, candidate.image, case.box)
        result.trials.append(
            Trial(
                case.seed,
                case.colour,
                case.kind,
                candidate.rank,
                colour,
                shape,
                seam.seam,
                seam.background,
                change,
            )
        )
    result.scenes += 1
    result.background_exact &= all(
        background_unchanged(case.image, c.image, case.mask) for c in outcome.candidates
    )
    result.scores.append([c.scores for c in outcome.candidates])
    return judged


def evaluate(
    models,
    scene_count: int = 30,
    first_seed: int = 0,
    params: Optional[dict] = None,
    log: Callable[[str], None] = print,
    empty_scenes: Optional[int] = None,
    case_for: Callable[[int, int], EditCase] = edit_case,
) -> Evaluation:
    """Guided and empty-prompt edits of ``scene_count`` held-out scenes (same seeds for both).

    ``empty_scenes`` limits the empty-prompt runs to the first that many scenes (default: all).
    ``case_for(index, size)``: the scenes (default scenes.edit_case; toyworld.thin.thin_case for thin bars).
    """
    if scene_count < 1:
        raise ValueError("scene_count must be at least 1")
    base = dict(params or {})
    base.pop("prompt", None)
    base.pop("seed", None)
    guided, unguided = ConditionResult(), ConditionResult()
    start, cpu_start = time.time(), time.process_time()
    size = int(models.image_size)
    empty_scenes = scene_count if empty_scenes is None else empty_scenes
    for index in range(first_seed, first_seed + scene_count):
        case = case_for(index, size)
        seed = 10_000 + 100 * index
        got = run_condition(case, models, base, case.prompt, seed, guided)
        plain = []
        if index - first_seed < empty_scenes:
            plain = run_condition(case, models, base, "", seed, unguided)
        log(f"scene {index}: '{case.prompt}' guided {got} empty prompt {plain}")
    per_scene = guided.candidates // max(1, guided.scenes)
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    return Evaluation(guided, unguided, scene_count, per_scene, base, seconds, cpu_seconds)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="preset name or folder with preset.json")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument(
        "--empty-scenes", type=int, help="empty-prompt runs on the first N scenes only (default: all)"
    )
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
    if args.empty_scenes is not None and not 0 <= args.empty_scenes <= args.scenes:
        parser.error("--empty-scenes must be between 0 and --scenes")

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
    result = evaluate(models, args.scenes, args.first_seed, params, empty_scenes=args.empty_scenes)
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
