#!/usr/bin/env python3
"""GUI stress: the real Krita GUI under Xvfb with the openbox window manager, driven through the docker.

Each Krita session arranges its window, opens resources/examples/lakeside.png at Krita's own zoom with the
status bar shown, selects a soft ellipse and then repeats a cycle through the docker's widgets: type a
prompt, press "Edit with text", pick another candidate in the list, press More (the selection dropped
meanwhile: the group keeps its own), press Vary, press Accept; press "Edit with text" again and press
Discard. During some jobs the window is resized and the docker's Advanced section is
toggled. A watchdog takes gdb stacks of all Krita threads when Krita's GUI thread stops for ``--stall``
seconds (a hang) and the script goes on with the next session. ``--screenshots N`` also runs
scripts/krita_screenshot.py N times. Standard library only:

    python3 scripts/krita_gui_stress.py --sessions 3 --cycles 10 --screenshots 3 --out /tmp/stress
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from krita_gui import ROOT, install_profile, krita_env, run_krita  # noqa: E402

DRIVER = r"""
import traceback
from krita import Extension, Krita, Selection
from blended_diffusion.qt import QApplication

RUN = GUI["run"]
PROMPTS = ["a red hot air balloon", "a yellow kite", "a white cloud", ""]


class Stress(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        self.cycles = []
        self.cycle = 0
        self.phase = ""
        QTimer.singleShot(4000, self.start)

    def fail(self):
        trace(traceback.format_exc())
        self.finish(error=traceback.format_exc())

    def start(self):
        try:
            arrange_window()
            QTimer.singleShot(1000, self.open)
        except Exception:
            self.fail()

    def open(self):
        try:
            app = Krita.instance()
            self.doc = app.openDocument(RUN["image"])
            app.activeWindow().addView(self.doc)
            trace("opened")
            when_idle(self.doc, self.select)
        except Exception:
            self.fail()

    def select(self):
        try:
            doc = self.doc
            self.select_ellipse()
            from blended_diffusion.session import model

            self.ctl = model()
            self.dock = find_docker()
            when_idle(doc, self.next_cycle)
        except Exception:
            self.fail()

    def select_ellipse(self):
        doc = self.doc
        sel = Selection()
        w, h = doc.width(), doc.height()
        sel.setPixelData(soft_ellipse(w, h, 300, 150, 70, 55), 0, 0, w, h)
        doc.setSelection(sel)

    def next_cycle(self):
        if self.cycle >= RUN["cycles"]:
            self.finish()
            return
        self.cycle += 1
        self.record = {"cycle": self.cycle, "started": time.time()}
        self.edit("accept")

    def edit(self, phase):
        try:
            from blended_diffusion.qt import QLineEdit

            edits = self.dock.findChildren(QLineEdit)
            prompt = [e for e in edits if e.placeholderText().startswith("Describe")][0]
            prompt.setText(PROMPTS[(self.cycle + (phase == "discard")) % len(PROMPTS)] or "a blue boat")
            if self.doc.selection() is None:
                self.select_ellipse()  # More dropped it last cycle
            self.press("Edit with text", phase)
        except Exception:
            self.fail()

    def round(self, name, phase):
        try:
            if phase == "more":
                self.doc.setSelection(None)  # the group remembers its selection
            self.press(name, phase)
        except Exception:
            self.fail()

    def press(self, name, phase):
        try:
            self.phase = phase
            button(self.dock, name).click()
            if self.ctl.worker is None:
                raise RuntimeError(
                    f"{name} did not start: {self.ctl.last_message!r}, question {self.ctl.question}, "
                    f"enabled {button(self.dock, name).isEnabled()}, state {self.ctl.flow.state}, "
                    f"status worker {self.ctl.status_worker}"
                )
            self.job_started = time.time()
            self.polls = 0
            self.timer = QTimer()
            self.timer.timeout.connect(self.poll)
            self.timer.start(200)
        except Exception:
            self.fail()

    def disturb(self):
        # Things a user does while the engine works: resize the window, open a docker section.
        from blended_diffusion.qt import QGroupBox

        win = main_window()
        if self.cycle % 3 == 1:
            win.resize(1500 if win.width() == 1600 else 1600, 1000)
        advanced = [b for b in self.dock.findChildren(QGroupBox) if b.title() == "Advanced"][0]
        advanced.setChecked(not advanced.isChecked())

    def poll(self):
        try:
            self.polls += 1
            if self.polls == 3 and self.cycle % 2 == 1:
                self.disturb()
            if self.ctl.worker is not None or self.ctl.flow.state not in ("review", "error"):
                if time.time() - self.job_started > RUN["job_timeout"]:
                    raise RuntimeError(f"job did not finish: {self.ctl.flow.state} {self.ctl.last_message}")
                return
            self.timer.stop()
            self.record[self.phase + "_s"] = round(time.time() - self.job_started, 2)
            if self.ctl.flow.state == "error":
                self.record[self.phase + "_error"] = self.ctl.last_message
                QTimer.singleShot(500, self.after_review)
                return
            from blended_diffusion.qt import QListWidget

            listing = self.dock.findChild(QListWidget)
            self.record[self.phase + "_list"] = listing.count()
            if self.phase == "accept":
                listing.setCurrentRow(min(1, listing.count() - 1))  # a click on the second candidate
                QTimer.singleShot(300, lambda: self.round("More", "more"))
            elif self.phase == "more":
                QTimer.singleShot(300, lambda: self.round("Vary", "vary"))
            elif self.phase == "vary":
                QTimer.singleShot(300, lambda: self.review("Accept"))
            else:
                QTimer.singleShot(300, lambda: self.review("Discard"))
        except Exception:
            self.fail()

    def review(self, name):
        try:
            button(self.dock, name).click()
            self.record[name.lower() + "_state"] = self.ctl.flow.state
            QTimer.singleShot(300, self.after_review)
        except Exception:
            self.fail()

    def after_review(self):
        if self.phase in ("accept", "more", "vary"):
            self.edit("discard")
        else:
            self.record["layers"] = len(self.doc.rootNode().childNodes())
            self.cycles.append(self.record)
            trace(f"cycle {self.cycle}: {self.record}")
            self.next_cycle()

    def finish(self, error=None):
        report(ok=error is None, error=error, cycles=self.cycles, engine_restarts=self.ctl.manager.restarts
               if hasattr(self, "ctl") else None)
        try:
            self.ctl.shutdown()
            self.doc.setModified(False)
        except Exception:
            pass
        QTimer.singleShot(300, QApplication.quit)


Krita.instance().addExtension(Stress(Krita.instance()))
"""


def session(args: argparse.Namespace, index: int, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bd-stress-") as tmp:
        home = Path(tmp) / "home"
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        (config_dir / "engine.json").write_text(
            json.dumps(
                {"python": args.python, "engine_root": str(ROOT), "models": args.models, "weights_dir": None}
            )
        )
        (config_dir / "plugin-settings.json").write_text(
            json.dumps(
                {
                    "candidates": 2,
                    "steps": args.steps,
                    "strength": 0.6,
                    "aug_num": 2,
                    "seed_mode": "random",
                    "live_preview": True,
                }
            )
        )
        install_profile(home, DRIVER)
        image = Path(tmp) / "lakeside.png"  # a copy: a killed Krita leaves an autosave next to its file
        shutil.copy(ROOT / "resources" / "examples" / "lakeside.png", image)
        status = Path(tmp) / "status.json"
        gui = {
            "status": str(status),
            "trace": str(Path(tmp) / "trace.txt"),
            "heartbeat": str(Path(tmp) / "heartbeat"),
            "run": {"image": str(image), "cycles": args.cycles, "job_timeout": args.job_timeout},
        }
        env = krita_env(home, config_dir / "engine.json", gui)
        run = run_krita(
            env, Path(gui["heartbeat"]), args.session_timeout, stall=args.stall, window_manager=not args.no_wm
        )
        result = {"ok": False, "error": "no report"}
        if status.exists():
            result = json.loads(status.read_text(encoding="utf-8"))
        result.update(
            session=index, hung=run.hung, timed_out=run.timed_out, wall_s=round(run.wall, 1), krita_rc=run.rc
        )
        if run.hung or run.timed_out:
            stacks = out / f"session-{index}-stacks.txt"
            stacks.write_text(run.stacks)
            result["stacks"] = str(stacks)
            trace = Path(gui["trace"])
            result["trace_tail"] = trace.read_text(encoding="utf-8")[-2000:] if trace.exists() else ""
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3, help="Krita starts")
    parser.add_argument("--cycles", type=int, default=10, help="edit + More + Vary + accept, edit + discard")
    parser.add_argument("--screenshots", type=int, default=0, help="runs of scripts/krita_screenshot.py")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="engine's Python")
    parser.add_argument("--models", default=str(ROOT / "resources" / "models" / "toy"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stall", type=float, default=45.0, help="seconds without a GUI heartbeat = hang")
    parser.add_argument("--job-timeout", type=float, default=300.0)
    parser.add_argument("--session-timeout", type=float, default=3600.0)
    parser.add_argument("--no-wm", action="store_true", help="without the openbox window manager")
    parser.add_argument("--out", default="krita-gui-stress", help="folder for the summary and stacks")
    args = parser.parse_args()
    for tool in ("Xvfb", "krita", "gdb") + (() if args.no_wm else ("openbox",)):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install krita xvfb openbox gdb)", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    sessions = []
    for index in range(1, args.sessions + 1):
        result = session(args, index, out)
        sessions.append(result)
        cycles = result.get("cycles") or []
        print(
            f"session {index}: {len(cycles)} cycles, hung={result['hung']}, ok={result['ok']}, "
            f"{result['wall_s']} s" + (f", error: {result['error'][-300:]}" if result.get("error") else ""),
            flush=True,
        )
    shots = []
    for index in range(1, args.screenshots + 1):
        t0 = time.time()
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "krita_screenshot.py"),
                "--python",
                args.python,
                "--out",
                str(out / f"screenshot-{index}.png"),
                "--stacks",
                str(out / f"screenshot-{index}-stacks.txt"),
            ],
            capture_output=True,
            text=True,
        )
        wall = round(time.time() - t0, 1)
        shots.append(
            {
                "rc": proc.returncode,
                "hung": proc.returncode == 3,
                "wall_s": wall,
                "tail": (proc.stdout + proc.stderr)[-500:],
            }
        )
        print(f"screenshot {index}: rc {proc.returncode} in {shots[-1]['wall_s']} s", flush=True)
    cycles = [c for s in sessions for c in s.get("cycles") or []]
    edits = [c[k] for c in cycles for k in ("accept_s", "more_s", "vary_s", "discard_s") if k in c]
    summary = {
        "sessions": len(sessions),
        "cycles": len(cycles),
        "edits": len(edits),
        "hangs": sum(s["hung"] for s in sessions) + sum(s["hung"] for s in shots),
        "failed_sessions": sum(not s.get("ok") for s in sessions),
        "edit_errors": [c for c in cycles if any(k.endswith("_error") for k in c)],
        "screenshots": shots,
        "edit_s_min_median_max": [min(edits), sorted(edits)[len(edits) // 2], max(edits)] if edits else None,
        "wall_s": round(time.time() - started, 1),
        "window_manager": not args.no_wm,
        "session_results": sessions,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "session_results"}, indent=1))
    return 0 if summary["hangs"] == 0 and not summary["failed_sessions"] else 1


if __name__ == "__main__":
    sys.exit(main())
