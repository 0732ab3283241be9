#!/usr/bin/env python3
"""Install Blended Diffusion for Krita: ``python3 install.py`` (``--help`` for the options).

Standard library only (Python >= 3.9), so it runs on a fresh machine. It

1. copies the plugin (``blended_diffusion.desktop``, the ``blended_diffusion`` package and the ``bridge``
   package it imports) into Krita's ``pykrita/`` folder and the ``.action`` file into ``actions/``;
2. enables the plugin in ``kritarc`` (``[python]`` ``enable_blended_diffusion=true``), keeping other lines;
3. copies the engine code (``engine``, ``bridge``, ``toyworld``, ``resources``) into the per-user data folder,
   so the installed plugin keeps working when this checkout moves or goes away;
4. creates the engine's virtual environment from ``requirements/engine.txt`` (reusing an installed torch that
   satisfies the pin) and records where the engine is in ``engine.json`` for the plugin;
5. downloads the default weights with the engine's own downloader (progress, resume, SHA-256);
6. runs a first edit on an example image and prints where the candidates are.

Everything it creates is listed in a manifest, so running it again repairs or upgrades that, and
``--uninstall`` removes exactly that and restores what it replaced (kritarc's line included).
``--zip PATH`` instead builds the archive Krita's Tools > Scripts > Import Python Plugin from File accepts.

The steps are the modules of the ``installer`` package beside this file (``installer/__init__.py`` lists
them); this file only makes that package importable and runs :func:`installer.cli.main`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout's installer, also under ``python -I``/``-P`` (which leave this folder off sys.path).
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from installer.cli import main  # noqa: E402 - importable only once HERE is on the path

if __name__ == "__main__":
    sys.exit(main())
