#!/usr/bin/env python3
"""Screenshot of the plugin in the real Krita GUI: docs/screenshot.png.

Starts Krita under Xvfb (xvfb-run) with a throw-away profile (HOME) where the plugin is installed, opens
resources/examples/lakeside.png, selects a soft ellipse, runs an edit through the docker on the toy preset
(resources/models/toy/) or else the tiny one, and saves the main window with the docker showing the
candidates. Standard library only:

    python3 scripts/krita_screenshot.py [--out docs/screenshot.png] [--python .venv/bin/python]
"""

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

# A one-off pykrita plugin that drives the GUI once the window exists, then grabs it and quits.
DRIVER = r"""
import json, os, traceback
from krita import Extension, Krita, Selection
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QDockWidget

SHOT = json.loads(os.environ["BD_SHOT"])


def trace(text):
    # UTF-8 whatever the locale: Krita's Python under Xvfb may default to ASCII, and the plugin's messages
    # hold "…"; an exception here would open Krita's modal "Script error" dialog and stop the run.
    with open(SHOT["status"] + ".trace", "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def report(**fields):
    with open(SHOT["status"], "w", encoding="utf-8") as handle:
        json.dump(fields, handle)


def soft_ellipse(w, h, cx, cy, rx, ry):
    out = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            r = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) ** 0.5
            out[y * w + x] = 255 if r <= 0.7 else (0 if r >= 1.0 else int(255 * (1.0 - r) / 0.3))
    return bytes(out)


class Driver(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        self.window = window
        trace("window created")
        QTimer.singleShot(4000, self.start)

    def start(self):
        try:
            app = Krita.instance()
            trace("start")
            self.doc = doc = app.openDocument(SHOT["image"])
            win = app.activeWindow()
            win.qwindow().move(0, 0)
            win.qwindow().resize(1600, 1000)  # no window manager under Xvfb: maximising does nothing
            view = win.addView(doc)
            # Krita 5.1.5 can deadlock when the status bar's progress widget appears while the image updates:
            # the canvas is resized, re-zooms ("fit page") and locks the progress updater's mutex again.
            # A fixed zoom and no status bar keep the canvas size still.
            view.canvas().setZoomLevel(1.8)
            win.qwindow().statusBar().hide()  # its progress widget showing up is what resizes the canvas
            sel = Selection()
            w, h = doc.width(), doc.height()
            sel.setPixelData(soft_ellipse(w, h, *SHOT["ellipse"]), 0, 0, w, h)
            doc.setSelection(sel)
            dock = win.qwindow().findChild(QDockWidget, "blended_diffusion_docker")
            if dock is None:
                raise RuntimeError("the Blended Diffusion docker is not registered")
            for other in win.qwindow().findChildren(QDockWidget):
                if other.objectName() not in ("KisLayerBox", "blended_diffusion_docker"):
                    other.hide()  # room for the candidates list
            dock.show()
            dock.raise_()
            from blended_diffusion.controller import controller

            self.ctl = controller()
            if not self.ctl.start_edit(self.ctl.options_from_settings()):
                raise RuntimeError("the edit did not start: " + self.ctl.last_message)
            trace("edit started")
            self.started = __import__("time").time()
            self.timer = QTimer()
            self.timer.timeout.connect(self.poll)
            self.timer.start(500)
        except Exception:
            report(ok=False, error=traceback.format_exc())
            QApplication.quit()

    def poll(self):
        from blended_diffusion import workflow

        waited = __import__("time").time() - self.started
        if int(waited * 2) % 20 == 0:
            trace(f"{waited:.0f} s: {self.ctl.flow.state} {self.ctl.last_message!r}")
        if self.ctl.worker is None and self.ctl.flow.state in (workflow.REVIEW, workflow.ERROR):
            self.timer.stop()
            QTimer.singleShot(2000, self.shoot)
        elif waited > SHOT["timeout"]:
            self.timer.stop()
            self.ctl.cancel()
            report(ok=False, error="the edit did not finish in time")
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
        try:  # does Krita's undo take back what the plugin added? (reported, not required for the shot)
            app = Krita.instance()
            root = self.doc.rootNode()
            before = len(root.childNodes())
            undos = 0
            while undos < 12 and any(n.type() == "grouplayer" for n in root.childNodes()):
                app.action("edit_undo").trigger()
                self.doc.waitForDone()
                QApplication.processEvents()
                undos += 1
            status = json.load(open(SHOT["status"], encoding="utf-8"))
            status["undo"] = {"layers_before": before, "undos": undos,
                              "group_left": any(n.type() == "grouplayer" for n in root.childNodes()),
                              "layers_after": [n.name() for n in root.childNodes()]}
            report(**status)
        except Exception:
            pass
        self.ctl.shutdown()
        self.doc.setModified(False)
        QTimer.singleShot(300, QApplication.quit)


Krita.instance().addExtension(Driver(Krita.instance()))
"""


def install_profile(home: Path, config_dir: Path) -> None:
    resources = home / ".local" / "share" / "krita"
    pykrita = resources / "pykrita"
    pykrita.mkdir(parents=True)
    shutil.copy(ROOT / "krita_plugin" / "blended_diffusion.desktop", pykrita)
    shutil.copytree(ROOT / "krita_plugin" / "blended_diffusion", pykrita / "blended_diffusion")
    shutil.copytree(ROOT / "bridge", pykrita / "bridge")
    (resources / "actions").mkdir()
    shutil.copy(ROOT / "krita_plugin" / "blended_diffusion.action", resources / "actions")
    (pykrita / "bd_screenshot_driver").mkdir()
    (pykrita / "bd_screenshot_driver" / "__init__.py").write_text(DRIVER)
    (pykrita / "bd_screenshot_driver.desktop").write_text(
        "[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library=bd_screenshot_driver\n"
        "X-Python-2-Compatible=false\nName=Screenshot driver\n"
    )
    krita_config = home / ".config"
    krita_config.mkdir(parents=True, exist_ok=True)
    (krita_config / "kritarc").write_text(
        "[python]\nenable_blended_diffusion=true\nenable_bd_screenshot_driver=true\n\n"
        "[General]\nshowWelcomeScreen=false\n"
    )
    config_dir.mkdir(parents=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument(
        "--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the engine's Python"
    )
    parser.add_argument("--image", default=str(ROOT / "resources" / "examples" / "lakeside.png"))
    parser.add_argument("--prompt", default="a red hot air balloon")
    parser.add_argument("--models", default=None, help="preset (default: toy when present, else tiny)")
    parser.add_argument("--timeout", type=float, default=540.0, help="seconds the edit may take")
    parser.add_argument("--attempts", type=int, default=3, help="Krita starts to try")
    args = parser.parse_args()
    for tool in ("xvfb-run", "krita"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install krita xvfb)", file=sys.stderr)
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
        install_profile(home, config_dir)
        (config_dir / "engine.json").write_text(
            json.dumps(
                {"python": args.python, "engine_root": str(ROOT), "models": models, "weights_dir": None}
            )
        )
        (config_dir / "plugin-settings.json").write_text(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "candidates": 4 if toy else 3,
                    "steps": 50 if toy else 10,
                    "strength": 0.6 if toy else 0.5,
                    "aug_num": 4 if toy else 2,
                    "seed_mode": "fixed",
                    "seed": 11,
                    "live_preview": True,
                }
            )
        )
        shot_tmp = Path(tmp) / "shot.png"
        status = Path(tmp) / "status.json"
        env = dict(os.environ)
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            BLENDED_DIFFUSION_CONFIG=str(config_dir / "engine.json"),
            BD_SHOT=json.dumps(
                {
                    "image": str(Path(args.image).resolve()),
                    "out": str(shot_tmp),
                    "status": str(status),
                    "ellipse": [300, 150, 70, 55],
                    "timeout": args.timeout,
                }
            ),
        )
        env.pop("QT_QPA_PLATFORM", None)
        # Private runtime and temp folders: Krita's single-instance socket lives there, and a Krita that
        # finds another instance's socket hands over to it instead of starting.
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        env.update(XDG_RUNTIME_DIR=str(runtime), TMPDIR=str(runtime))
        # Krita's embedded Python must find Debian's python3 (with PyQt5), not a pyenv or venv one first.
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if "pyenv" not in p and ".venv" not in p
        )
        for name in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(name, None)
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"]
        started = time.time()
        for attempt in range(1, args.attempts + 1):
            proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                output, _ = proc.communicate(timeout=args.timeout + 90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 15)
                output, _ = proc.communicate()
            if status.exists():
                break
            # Krita under Xvfb occasionally hangs before plugins run; a fresh start usually works.
            print(output.decode("utf-8", "replace")[-4000:], file=sys.stderr)
            trace_file = Path(str(status) + ".trace")
            steps = (
                trace_file.read_text(encoding="utf-8")
                if trace_file.exists()
                else "(the driver plugin never ran)\n"
            )
            print(
                f"attempt {attempt}: Krita ended without taking the screenshot; driver trace:\n{steps}",
                file=sys.stderr,
            )
        if not status.exists():
            print("error: no screenshot", file=sys.stderr)
            return 1
        result = json.loads(status.read_text(encoding="utf-8"))
        if not result.get("ok") or not shot_tmp.exists():
            print(f"error: {result}", file=sys.stderr)
            return 1
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot_tmp, args.out)
        print(f"{args.out}: {result['status']} ({models} preset, {time.time() - started:.0f} s)")
        if "undo" in result:
            print(f"undo check: {result['undo']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
