"""Test-only Krita plugin: when the first window exists, write what Krita loaded to $BD_PROBE_OUT, exit.

tests/installer/test_krita_loads.py copies it next to the plugin install.py installed, so the report shows
whether real Krita found and started ``blended_diffusion`` from the installed pykrita folder (not from the
source tree).
"""

import importlib.util
import json
import os
import sys
import traceback

from krita import Extension, Krita

try:  # the plugin's Qt rule (blended_diffusion/qt.py), not imported from it: the probe must not load it
    import pykrita

    _QT6 = getattr(pykrita, "qt_major_version", lambda: 5)() >= 6
except ImportError:
    _QT6 = False
if _QT6:
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QDockWidget
else:
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QDockWidget

WATCHED = ("blended_diffusion", "bridge")


def _collect() -> dict:
    krita = Krita.instance()
    report = {
        "extensions": [type(e).__module__ + "." + type(e).__name__ for e in krita.extensions()],
        "modules": {
            name: getattr(module, "__file__", None)
            for name, module in list(sys.modules.items())
            if module is not None and name.split(".")[0] in WATCHED
        },
    }
    # Where the names would be imported from now (the plugin may import bridge only when it needs it).
    report["resolves"] = {}
    for name in WATCHED:
        spec = importlib.util.find_spec(name)
        report["resolves"][name] = spec.origin if spec else None
    windows = krita.windows()
    if windows:
        docks = windows[0].qwindow().findChildren(QDockWidget)
        report["dockers"] = [d.objectName() for d in docks]
    # The menu actions as Krita made them (the .action file's shortcuts included).
    report["actions"] = {}
    for action in krita.actions():
        name = action.objectName()
        if name.startswith("blended_diffusion_"):
            report["actions"][name] = [action.text(), action.shortcut().toString()]
    if "blended_diffusion" in sys.modules:
        # The plugin's own reader of the record install.py wrote.
        config = __import__("blended_diffusion.config", fromlist=["load_engine_config"])
        record = config.load_engine_config(check_files=False)
        report["engine_config"] = {"python": record.python, "engine_root": record.engine_root}
    return report


def _report_and_exit() -> None:
    try:
        report = _collect()
    except Exception:
        report = {"error": traceback.format_exc()}
    with open(os.environ["BD_PROBE_OUT"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    # Krita's own shutdown can crash when nothing is open; the report is all this run is for.
    os._exit(0)


class InstallProbe(Extension):
    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(1000, _report_and_exit))

    def createActions(self, window) -> None:
        pass


if os.environ.get("BD_PROBE_OUT"):
    Krita.instance().addExtension(InstallProbe(Krita.instance()))
