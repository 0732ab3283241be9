"""Environment for starting the real Krita from the tests.

Krita embeds the system Python and finds that Python's prefix through the first ``python3`` on PATH. When
the tests run under another Python of the same version first on PATH (pyenv, conda, a venv's activation),
Krita's embedded Python takes that prefix, misses Debian's dist-packages and fails with
"No module named 'PyQt5'". Putting Krita's own folder first on PATH keeps its Python the system's.
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, Mapping


def krita_environment(base: Mapping[str, str], executable: str = "krita") -> Dict[str, str]:
    env = dict(base)
    found = shutil.which(executable, path=env.get("PATH"))
    if found:
        krita_dir = os.path.dirname(os.path.realpath(found))
        env["PATH"] = os.pathsep.join([krita_dir, env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env
