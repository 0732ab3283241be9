"""Issue 31's toy-world rows side by side in one process: the paper's method (toy, paper and balanced modes)
against Blended Latent Diffusion (toy-latent, with and without background reconstruction), and on thin
selections (toyworld.thin) toy-latent with and without progressive mask shrinking, toy paper for reference.

Every row runs toyworld.evaluate's loop (the engine's edit(), judges without CLIP) on the same held-out
scenes and seeds, guided only; each candidate gets its colour / shape judgement, its edge seam
(toyworld.seam) and its change inside the region; a row's CPU seconds per candidate are the process time of
its edit() calls alone. The JSON is rewritten after every row (a run cut short keeps what finished) and
``--merge`` adds rows to an existing file (e.g. the latent rows again with a retrained model).

    OMP_NUM_THREADS=1 python -m toyworld.rows --json docs/results/latent/latent-toy-rows.json --threads 1
    python -m toyworld.rows --rows toy-latent,thin-latent --latent-models /path/to/toy-latent \\
        --merge --json docs/results/latent/latent-toy-rows.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from engine.diagnostics import cpu_name
from toyworld.evaluate import evaluate, preset_edit_defaults
from toyworld.scenes import edit_case
from toyworld.soft import feathered_case
from toyworld.thin import CHANGED_LEVELS, thin_case, thin_rates

# name -> (model: "toy", "latent" or "lcm", quality mode, explicit options, cases: "main" or "thin")
ROWS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "toy-latent": ("latent", "paper", {}, "main"),
    "toy-latent-bgrec": ("latent", "paper", {"background_reconstruction": True}, "main"),
    "thin-latent": ("latent", "paper", {"mask_shrink": False}, "thin"),
    "thin-latent-shrink": ("latent", "paper", {"mask_shrink": True}, "thin"),
    "toy-balanced": ("toy", "balanced", {}, "main"),
    "toy-paper": ("toy", "paper", {}, "main"),
    "thin-toy-paper": ("toy", "paper", {}, "thin"),
    # issue 37: the seam levers (latent/seam.py) and soft selections (latent/change_map.py), each alone,
    # against the latent method before them ("-before") and the default (toy-latent: the band lever, the
    # only one that acts on a hard selection); the same on feathered selections
    "toy-latent-before": ("latent", "paper", {"seam_fix": "off", "differential": False}, "main"),
    "toy-latent-residual": ("latent", "paper", {"seam_fix": "residual"}, "main"),
    "toy-latent-colour": ("latent", "paper", {"seam_fix": "colour"}, "main"),
    "toy-latent-poisson": ("latent", "paper", {"seam_fix": "poisson"}, "main"),
    "feathered-latent-before": ("latent", "paper", {"seam_fix": "off", "differential": False}, "feathered"),
    "feathered-latent-differential": ("latent", "paper", {"seam_fix": "off"}, "feathered"),
    "feathered-latent": ("latent", "paper", {}, "feathered"),
    "feathered-toy-paper": ("toy", "paper", {}, "feathered"),
    # issue 38: bf16 on a CPU with native bf16 against fp32, both asked for by name (auto picks one of them)
    "toy-latent-fp32": ("latent", "paper", {"precision": "fp32"}, "main"),
    "toy-latent-bf16": ("latent", "paper", {"precision": "bf16"}, "main"),
    "toy-paper-fp32": ("toy", "paper", {"precision": "fp32"}, "main"),
    "toy-paper-bf16": ("toy", "paper", {"precision": "bf16"}, "main"),
    # issue 38: the teacher itself at a few DDIM steps (guided: two UNet passes a step), and the few-step
    # student (toyworld/distill_latent.py) at 2, 4 (its default) and 8 LCM steps (one pass a step)
    "toy-latent-ddim4": ("latent", "paper", {"timestep_respacing": "4"}, "main"),
    "toy-latent-ddim8": ("latent", "paper", {"timestep_respacing": "8"}, "main"),
    "toy-lcm-2": ("lcm", "paper", {"timestep_respacing": "2"}, "main"),
    "toy-lcm-4": ("lcm", "paper", {"timestep_respacing": "4"}, "main"),
    "toy-lcm-8": ("lcm", "paper", {"timestep_respacing": "8"}, "main"),
}
# the cheap rows first: on a shared CPU a run may have to stop early (background reconstruction fine-tunes
# a decoder per candidate, about 5x a plain toy-latent candidate, so it comes last)
DEFAULT_ORDER = (
    "toy-latent",
    "thin-latent",
    "thin-latent-shrink",
    "toy-balanced",
    "toy-paper",
    "thin-toy-paper",
    "toy-latent-bgrec",
)
CASES: dict[str, Callable] = {"main": edit_case, "thin": thin_case, "feathered": feathered_case}
# a row's "candidates": one list per judged candidate, in this order (toyworld.evaluate.Trial's fields)
TRIAL_FIELDS = (
    "scene",
    "colour",
    "kind",
    "rank",
    "got_colour",
    "got_shape",
    "seam",
    "seam_background",
    "change",
)


def row_params(models_dir: str, quality: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The edit parameters of a row: the preset's edit_defaults, the quality mode, the row's options (as the
    CLI and the bridge resolve them: engine.editing.paper.modes.resolve_params)."""
    from engine.editing.paper.modes import resolve_params

    return resolve_params(quality, explicit, preset_edit_defaults(models_dir)).to_dict()


def _rate(hits: int, trials: int) -> Optional[float]:
    return round(hits / trials, 4) if trials else None


def summarise(result, cases: str) -> dict[str, Any]:
    """The row's figures from an Evaluation (guided condition only)."""
    guided = result.guided
    data = result.to_dict()["guided"]
    every, top = guided.rates(), guided.rates(top=True)
    out: dict[str, Any] = {
        "trials": every.trials,
        "scenes": guided.scenes,
        "guided_colour": _rate(every.colour, every.trials),
        "guided_both": _rate(every.both, every.trials),
        "top_colour": _rate(top.colour, top.trials),
        "top_both": _rate(top.both, top.trials),
        "seam": guided.seams(),
        "top_seam": guided.seams(top=True),
        "background_exact": guided.background_exact,
        "cpu_seconds_per_candidate": data["cpu_seconds_per_candidate"],
        "edit_cpu_seconds": data["edit_cpu_seconds"],
        "wall_seconds": round(result.seconds, 1),
    }
    if cases == "thin":  # shape cannot show in a bar: colour hit, coloured, changed instead
        out.pop("guided_both"), out.pop("top_both")
        out["thin"] = thin_rates(guided.trials)
        out["thin_top"] = thin_rates(guided.top)
    else:
        out["per_shape"] = data["per_shape"]
        out["per_colour"] = data["per_colour"]
    return out


def run_row(
    name: str,
    models,
    models_dir: str,
    first: int,
    count: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One row: ``count`` scenes from ``first`` with the row's settings: figures, settings, trials."""
    _, quality, explicit, cases = ROWS[name]
    params = row_params(models_dir, quality, explicit)
    result = evaluate(models, count, first, params, log=log, empty_scenes=0, case_for=CASES[cases])
    trials = result.to_dict()["trials"]["guided"]
    return {
        **summarise(result, cases),
        "settings": {
            "models": models_dir,
            "quality": quality,
            "options": explicit,
            "cases": cases,
            "first_scene": first,
            "scene_count": count,
        },
        "params": params,
        "candidates": [_trial_row(t) for t in trials],
    }


def _trial_row(trial: dict) -> list:
    return [round(v, 3) if isinstance(v, float) else v for v in (trial[f] for f in TRIAL_FIELDS)]


def write_report(path: Path, report: dict) -> None:
    """Indented JSON with every innermost list of scalars (a trial, a command's words) on one line: 3000
    trials stay readable without a line per value."""
    text = json.dumps({**report, "trial_fields": list(TRIAL_FIELDS)}, indent=1)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    path.write_text(text + "\n")


def table(rows: dict[str, dict]) -> str:
    """Markdown tables of the rows (main rows, then thin rows)."""
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    num = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "| row | trials | guided colour | guided both | top colour | top both | seam mean / p90 | "
        "bg seam mean / p90 | bg exact | CPU s / cand |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    thin = [
        "| thin row | trials | colour hit | coloured | changed | mean change | top colour | "
        "seam mean / p90 | bg seam mean / p90 | bg exact | CPU s / cand |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, r in rows.items():
        s, b = r["seam"]["all"], r["seam"]["background"]
        seams = f"{num(s['mean'])} / {num(s['p90'])} | {num(b['mean'])} / {num(b['p90'])}"
        tail = f"{seams} | {r['background_exact']} | {num(r['cpu_seconds_per_candidate'])} |"
        if "thin" in r:
            t = r["thin"]
            thin.append(
                f"| {name} | {r['trials']} | {pct(t['colour_hit'])} | {pct(t['coloured'])} | "
                f"{pct(t['changed'])} | {t['mean_change']:.1f} | {pct(r['top_colour'])} | {tail}"
            )
        else:
            lines.append(
                f"| {name} | {r['trials']} | {pct(r['guided_colour'])} | {pct(r['guided_both'])} | "
                f"{pct(r['top_colour'])} | {pct(r['top_both'])} | {tail}"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(thin)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.rows", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", default=",".join(DEFAULT_ORDER), help=f"comma list, in order, of {list(ROWS)}"
    )
    parser.add_argument("--toy-models", default="toy", help="the paper method's preset (name or folder)")
    parser.add_argument("--latent-models", default="toy-latent", help="the latent preset (name or folder)")
    parser.add_argument(
        "--lcm-models", default="toy-latent-lcm", help="the few-step latent preset (name or folder)"
    )
    parser.add_argument("--first-seed", type=int, default=30, help="first held-out scene (main and thin)")
    parser.add_argument("--scenes", type=int, default=120, help="main-case scenes a row")
    parser.add_argument("--thin-scenes", type=int, default=60, help="thin-case scenes a row")
    parser.add_argument(
        "--row-scenes", action="append", default=[], metavar="ROW=N", help="scenes for one row (overrides)"
    )
    parser.add_argument("--json", required=True, help="write (or with --merge, update) this file")
    parser.add_argument("--merge", action="store_true", help="keep the file's other rows, replace these")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    counts = {n: args.thin_scenes if ROWS[n][3] == "thin" else args.scenes for n in names}
    for item in args.row_scenes:
        name, _, value = item.partition("=")
        if name not in counts or not value.isdigit():
            parser.error(f"--row-scenes needs ROW=N for a chosen row, got {item!r}")
        counts[name] = int(value)

    import torch

    from engine.models.loading import load_models

    torch.set_num_threads(args.threads)
    path = Path(args.json)
    report: dict[str, Any] = json.loads(path.read_text()) if args.merge and path.exists() else {}
    command = "OMP_NUM_THREADS=1 python -m toyworld.rows " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report.update(
        {
            "what": "issue 31: toy world rows, the paper's method against Blended Latent Diffusion",
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, no GPU",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "definitions": {
                "guided": "every candidate (4 a scene): colour by the pixel rule, shape by outline fit",
                "top": "the engine's rank-1 candidate of each scene",
                "seam": "toyworld/seam.py: border step (mean |RGB| over 4-neighbour pairs across the binary "
                "selection's border) in the result minus in the source, 0..255; 'background': only pairs "
                "whose inside pixel is not coloured by the pixel rule",
                "thin": "toyworld/thin.py: bars 4-6 px wide (2-3 latent cells), over background only; "
                f"changed = mean |RGB change| over the bar >= {CHANGED_LEVELS}",
                "cpu_seconds_per_candidate": "time.process_time of the row's edit() calls / candidates",
            },
        }
    )
    report.setdefault("commands", []).append(command)
    rows = report.setdefault("rows", {})
    folders = {"toy": args.toy_models, "latent": args.latent_models, "lcm": args.lcm_models}
    loaded: dict[str, Any] = {}
    for name in names:
        kind = ROWS[name][0]
        if kind not in loaded:
            loaded[kind] = load_models(folders[kind], device="cpu")
        print(
            f"== {name}: {counts[name]} scenes from {args.first_seed} ({time.strftime('%H:%M:%S')})",
            flush=True,
        )
        rows[name] = run_row(name, loaded[kind], folders[kind], args.first_seed, counts[name])
        rows[name]["command"] = command
        write_report(path, report)
        print(table({name: rows[name]}), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
