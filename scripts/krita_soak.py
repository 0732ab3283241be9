#!/usr/bin/env python3
"""Long-session soak: many edits through the public scripting API in ONE Krita process (kritarunner).

Opens a copy of resources/examples/lakeside.png, selects a soft ellipse and runs ``--edits`` edits with
mixed options (candidates, strength, steps, seeds, background, DDIM, the Algorithm 1 baseline, removal),
choosing / accepting / discarding in turn, on the toy preset. Records the resident memory (VmRSS) of
Krita and of the engine after edit 10 and after the last edit, and lists files left in the session's
private temporary folder (TMPDIR of Krita and the engine) at the end. Standard library only:

    python3 scripts/krita_soak.py --edits 40 [--python .venv/bin/python] [--out soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = r'''
import json, os, time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)


def soft_ellipse(w, h, cx, cy, rx, ry):
    out = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            r = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) ** 0.5
            out[y * w + x] = 255 if r <= 0.7 else (0 if r >= 1.0 else int(255 * (1.0 - r) / 0.3))
    return bytes(out)


def __main__(args):
    out_path, image, edits, mark = args[0], args[1], int(args[2]), int(args[3])
    from krita import Krita, Selection
    from blended_diffusion import api

    doc = Krita.instance().openDocument(image)
    sel = Selection()
    w, h = doc.width(), doc.height()
    sel.setPixelData(soft_ellipse(w, h, 300, 150, 70, 55), 0, 0, w, h)
    doc.setSelection(sel)
    source = doc.rootNode().childNodes()[0]
    engine = api.default_engine()
    prompts = ["a red hot air balloon", "a yellow kite", "a white cloud", ""]
    result = {"edits": [], "rss": {}}
    try:
        for i in range(1, edits + 1):
            options = dict(
                candidates=1 + i % 3,
                strength=(0.5, 0.7, 0.9)[i % 3],
                steps=(10, 15, 20)[i % 3],
                aug_num=2,
                seed=i,
                background=i % 7 == 3,
                ddim=i % 5 == 2,
                baseline=i % 9 == 4,
            )
            started = time.time()
            record = {"i": i, **options}
            try:
                outcome = api.run_edit_and_wait(doc, prompts[i % 4], layer=source, engine=engine, **options)
                if len(outcome.layers) > 1:
                    api.choose(outcome, len(outcome.layers) - 1)
                if i % 2:
                    api.accept(outcome)
                else:
                    api.discard(outcome)
            except Exception as exc:  # recorded: the soak reports failed edits
                record["error"] = f"{type(exc).__name__}: {exc}"
            record.update(s=round(time.time() - started, 2), layers=len(doc.rootNode().childNodes()))
            result["edits"].append(record)
            if i in (mark, edits):
                result["rss"][str(i)] = {"krita_mb": rss_mb(os.getpid()),
                                         "engine_mb": rss_mb(engine._process.pid)}
                result["engine_pid"] = engine._process.pid
            with open(out_path, "w") as handle:
                json.dump(result, handle)
    finally:
        engine.stop()
        doc.setModified(False)
        doc.close()
        result["engine_restarts"] = engine.restarts
        with open(out_path, "w") as handle:
            json.dump(result, handle)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--mark", type=int, default=10, help="also record memory after this edit")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="engine's Python")
    parser.add_argument("--models", default=str(ROOT / "resources" / "models" / "toy"))
    parser.add_argument("--out", default="krita-soak.json")
    parser.add_argument("--limit-mb", type=float, default=100.0, help="allowed growth from --mark to the end")
    args = parser.parse_args()
    if shutil.which("kritarunner") is None:
        print("error: kritarunner is not installed (apt-get install krita)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bd-soak-") as tmp:
        home, private_tmp = Path(tmp) / "home", Path(tmp) / "tmp"
        runtime = Path(tmp) / "runtime"  # as a desktop session has: else Qt makes one in TMPDIR
        for folder in (home, private_tmp, runtime):
            folder.mkdir(mode=0o700)
        (home / "soak_scenario.py").write_text(SCENARIO)
        image = home / "lakeside.png"
        shutil.copy(ROOT / "resources" / "examples" / "lakeside.png", image)
        config = home / "engine.json"
        config.write_text(json.dumps({"python": args.python, "engine_root": str(ROOT), "models": args.models,
                                      "weights_dir": None}))
        env = dict(os.environ)
        env.update(
            HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local" / "share"), XDG_RUNTIME_DIR=str(runtime),
            QT_QPA_PLATFORM="offscreen", TMPDIR=str(private_tmp), BLENDED_DIFFUSION_CONFIG=str(config),
            PYTHONPATH=os.pathsep.join([str(home), str(ROOT), str(ROOT / "krita_plugin")]),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if "pyenv" not in p and ".venv" not in p
        )
        env.pop("PYTHONHOME", None)
        result_file = home / "result.json"
        started = time.time()
        proc = subprocess.run(
            ["kritarunner", "-s", "soak_scenario", str(result_file), str(image), str(args.edits),
             str(args.mark)],
            env=env, cwd=str(home), capture_output=True, text=True,
        )
        wall = time.time() - started
        if not result_file.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            print("error: the soak wrote no result", file=sys.stderr)
            return 1
        result = json.loads(result_file.read_text())
        left = sorted(str(p.relative_to(private_tmp)) for p in private_tmp.rglob("*"))
    result.update(wall_s=round(wall, 1), krita_rc=proc.returncode, temp_files_left=left,
                  traceback_in_log="Traceback" in proc.stdout + proc.stderr)
    done = len(result["edits"])
    rss = result["rss"]
    growth = {}
    if str(args.mark) in rss and str(done) in rss:
        for key in ("krita_mb", "engine_mb"):
            growth[key] = round(rss[str(done)][key] - rss[str(args.mark)][key], 1)
    result["growth_mb"] = growth
    Path(args.out).write_text(json.dumps(result, indent=1))
    times = sorted(e["s"] for e in result["edits"])
    print(f"{done}/{args.edits} edits in {wall:.0f} s (edit {times[0]}-{times[-1]} s, median "
          f"{times[len(times) // 2]} s); memory {rss}; growth {growth}; temp files left: {left}")
    failed = [e for e in result["edits"] if "error" in e]
    if failed:
        print(f"failed edits: {failed}")
    ok = done == args.edits and not failed and not left and growth
    ok = ok and all(v <= args.limit_mb for v in growth.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
