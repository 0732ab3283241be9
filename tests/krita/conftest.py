import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The plugin package lives in krita_plugin/ (Krita's pykrita/ after install); bridge is at the repo root.
for path in (ROOT / "krita_plugin", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
