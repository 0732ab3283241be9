#!/usr/bin/env python3
"""Screenshot of the plugin in the real Krita GUI: docs/images/screenshot.png.

Starts Krita under Xvfb (with the openbox window manager unless --no-wm) with a throw-away profile
(HOME) where the plugin is installed, opens resources/examples/lakeside.png, selects a soft ellipse,
presses the docker's "Edit with text" (toy preset from resources/models/toy/, else tiny), picks the
second candidate, presses "More" and saves the main window with the docker showing the whole group.
``--regions``: two selection masks on the layer, named by their prompts, instead of the selection (the
docker lists them; issue 39).
Krita keeps its status bar and its own zoom; a hang is reported with gdb stacks of all Krita threads.
Standard library only:

    python3 scripts/krita_screenshot.py [--out docs/images/screenshot.png] [--python .venv/bin/python]
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.krita_roots, for --krita-root
from krita_gui import ROOT, install_profile, krita_env, run_krita  # noqa: E402

# A one-off pykrita plugin that drives the GUI once the window exists, then grabs it and quits.
DRIVER = r"""
import traceback
from krita import Extension, Krita, Selection
from blended_diffusion.qt import QApplication

SHOT = GUI["shot"]


class Driver(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        self.window = window
        trace("window created")
        QTimer.singleShot(4000, self.start)

    def start(self):
        try:
            trace("start")
            arrange_window()
            QTimer.singleShot(1000, self.open)
        except Exception:
            report(ok=False, error=traceback.format_exc())
            QApplication.quit()

    def open(self):
        try:
            app = Krita.instance()
            self.doc = app.openDocument(SHOT["image"])
            app.activeWindow().addView(self.doc)  # Krita's own zoom ("fit page") and status bar
            trace("opened")
            when_idle(self.doc, self.select)
        except Exception:
            report(ok=False, error=traceback.format_exc())
            QApplication.quit()

    def select(self):
        doc = self.doc
        w, h = doc.width(), doc.height()
        if SHOT["regions"]:  # issue 39: selection masks on the layer, each named by its prompt
            layer = doc.rootNode().childNodes()[0]
            for name, *ellipse in SHOT["regions"]:
                mask = doc.createSelectionMask(name)
                sel = Selection()
                sel.setPixelData(soft_ellipse(w, h, *ellipse), 0, 0, w, h)
                mask.setSelection(sel)
                layer.addChildNode(mask, None)
            doc.setActiveNode(layer)
            QTimer.singleShot(2500, lambda: when_idle(doc, self.edit))  # the docker's poll lists them
            return
        sel = Selection()
        sel.setPixelData(soft_ellipse(w, h, *SHOT["ellipse"]), 0, 0, w, h)
        doc.setSelection(sel)
        when_idle(doc, self.edit)

    def edit(self):
        try:
            dock = find_docker()
            from blended_diffusion.session import model

            self.ctl = model()
            button(dock, "Edit with text").click()  # as a user would
            if self.ctl.worker is None:
                raise RuntimeError("the edit did not start: " + self.ctl.last_message)
            trace("edit started")
            self.started = time.time()
            self.timer = QTimer()
            self.timer.timeout.connect(self.poll)
            self.timer.start(500)
        except Exception:
            report(ok=False, error=traceback.format_exc())
            QApplication.quit()

    def poll(self):
        from blended_diffusion import workflow

        waited = time.time() - self.started
        if time.time() - getattr(self, "traced", 0) > 10:
            self.traced = time.time()
            trace(f"{waited:.0f} s: {self.ctl.flow.state} {self.ctl.last_message!r}")
        if self.ctl.worker is None and self.ctl.flow.state in (workflow.REVIEW, workflow.ERROR):
            self.timer.stop()
            if self.ctl.flow.state == workflow.REVIEW and not getattr(self, "more", False):
                QTimer.singleShot(1000, self.press_more)
            elif SHOT["regions"]:  # the edited layer active again: the docker lists its regions
                self.doc.setActiveNode(self.doc.rootNode().childNodes()[0])
                QTimer.singleShot(2500, self.shoot)
            else:
                QTimer.singleShot(2000, self.shoot)
        elif waited > SHOT["timeout"]:
            self.timer.stop()
            self.ctl.cancel()
            report(ok=False, error="the edit did not finish in time")
            QApplication.quit()

    def press_more(self):
        try:
            from blended_diffusion.qt import QListWidget

            dock = find_docker()
            dock.findChild(QListWidget).setCurrentRow(1)  # the user looks at #2, then asks for more
            self.more = True
            button(dock, "More").click()
            if self.ctl.worker is None:
                raise RuntimeError("More did not start: " + self.ctl.last_message)
            trace("more started")
            self.timer.start(500)
        except Exception:
            report(ok=False, error=traceback.format_exc())
            QApplication.quit()

    def shoot(self):
        try:
            win = Krita.instance().activeWindow().qwindow()
            win.grab().save(SHOT["out"], "PNG")
            report(ok=self.ctl.flow.state == "review", state=self.ctl.flow.state,
                   status=self.ctl.flow.status_text(), message=self.ctl.last_message,
                   candidates=[c.rank for c in self.ctl.candidates()])
        except Exception:
            report(ok=False, error=traceback.format_exc())
        self.ctl.shutdown()
        self.doc.setModified(False)
        QTimer.singleShot(300, QApplication.quit)


Krita.instance().addExtension(Driver(Krita.instance()))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "screenshot.png"))
    parser.add_argument(
        "--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the engine's Python"
    )
    parser.add_argument("--image", default=str(ROOT / "resources" / "examples" / "lakeside.png"))
    parser.add_argument("--prompt", default="a red hot air balloon")
    parser.add_argument("--models", default=None, help="preset (default: toy when present, else tiny)")
    parser.add_argument("--timeout", type=float, default=540.0, help="seconds the edit may take")
    parser.add_argument(
        "--detail", choices=("off", "auto", "on"), default="on", help="the docker's Full-resolution detail"
    )
    parser.add_argument(
        "--regions",
        action="store_true",
        help="two selection masks named by their prompts instead of a selection (issue 39; --out "
        "docs/images/screenshot-regions.png)",
    )
    parser.add_argument("--no-wm", action="store_true", help="run without the openbox window manager")
    parser.add_argument(
        "--krita-root",
        default=None,
        choices=("krita6", "krita53"),
        help="the Krita of a Debian root (built by tests/krita_roots.py) instead of this machine's",
    )
    parser.add_argument("--stacks", default=None, help="where to write gdb stacks if Krita hangs")
    args = parser.parse_args()
    for tool in ("Xvfb", "krita") + (() if args.no_wm else ("openbox",)):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install krita xvfb openbox)", file=sys.stderr)
            return 2
    toy_dir = ROOT / "resources" / "models" / "toy"
    if args.models:
        models = args.models
    elif (ROOT / "engine" / "models" / "presets" / "toy.json").is_file():
        models = "toy"
    elif (toy_dir / "preset.json").is_file():
        models = str(toy_dir)
    else:
        models = "tiny"
    toy = models != "tiny"
    with tempfile.TemporaryDirectory(prefix="bd-shot-") as tmp:
        home = Path(tmp) / "home"
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        (config_dir / "engine.json").write_text(
            json.dumps(
                {"python": args.python, "engine_root": str(ROOT), "models": models, "weights_dir": None}
            )
        )
        (config_dir / "plugin-settings.json").write_text(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "candidates": 3,
                    "steps": 50 if toy else 10,
                    "strength": 0.6 if toy else 0.5,
                    "aug_num": 4 if toy else 2,
                    "seed_mode": "fixed",
                    "seed": 11,
                    "live_preview": True,
                    "detail": args.detail,
                }
            )
        )
        install_profile(home, DRIVER)
        # A copy: a Krita that is killed leaves an autosave next to the file it had open, and the next
        # openDocument() would wait on Krita's "open the autosave?" dialog.
        image = Path(tmp) / Path(args.image).name
        shutil.copy(args.image, image)
        shot_tmp = Path(tmp) / "shot.png"
        status = Path(tmp) / "status.json"
        gui = {
            "status": str(status),
            "trace": str(Path(tmp) / "trace.txt"),
            "heartbeat": str(Path(tmp) / "heartbeat"),
            "shot": {
                "image": str(image),
                "out": str(shot_tmp),
                "ellipse": [300, 150, 70, 55],
                "regions": [["a red kite", 190, 120, 60, 45], ["a hot air balloon", 420, 140, 60, 50]]
                if args.regions
                else [],
                "timeout": args.timeout,
            },
        }
        env = krita_env(home, config_dir / "engine.json", gui)
        run = run_krita(
            env,
            Path(gui["heartbeat"]),
            args.timeout + 120,
            window_manager=not args.no_wm,
            root=args.krita_root,
        )
        trace_file = Path(gui["trace"])
        steps = trace_file.read_text(encoding="utf-8") if trace_file.exists() else "(no trace)\n"
        if run.hung:
            if args.stacks:
                Path(args.stacks).write_text(run.stacks)
            print(f"error: Krita hung (GUI thread stopped); driver trace:\n{steps}", file=sys.stderr)
            print(run.stacks[-20000:] if not args.stacks else f"stacks: {args.stacks}", file=sys.stderr)
            return 3
        if not status.exists():
            print(run.output[-4000:], file=sys.stderr)
            print(
                f"error: no screenshot (Krita rc {run.rc}, timed out: {run.timed_out}); driver trace:\n"
                f"{steps}",
                file=sys.stderr,
            )
            return 1
        result = json.loads(status.read_text(encoding="utf-8"))
        if not result.get("ok") or not shot_tmp.exists():
            print(f"error: {result}", file=sys.stderr)
            return 1
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot_tmp, args.out)
        print(f"{args.out}: {result['status']} ({models} preset, {run.wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
