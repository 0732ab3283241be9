"""Blended Diffusion for Krita: text-driven editing of a selected region, candidates as layers.

Krita imports this package (pykrita) and the registration below adds the "Blended Diffusion" docker and
the actions. Scripts use :mod:`blended_diffusion.api`.
"""

import os
import sys


def _ensure_bridge() -> None:
    # The zip install vendors the bridge inside the package (Krita's importer extracts only this folder).
    try:
        import bridge  # noqa: F401
    except ImportError:
        vendor = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
        if os.path.isdir(vendor) and vendor not in sys.path:
            sys.path.append(vendor)


def _register() -> None:
    try:
        from . import krita_api
    except ImportError:
        return  # not inside Krita (unit tests, the engine side): nothing to register
    if os.environ.get("BLENDED_DIFFUSION_NO_REGISTER"):
        return  # scripts run by kritarunner need the API, not the GUI
    from .ui.docker import DOCKER_ID, BlendedDiffusionDocker
    from .ui.extension import BlendedDiffusionExtension

    krita_api.register(BlendedDiffusionExtension, DOCKER_ID, BlendedDiffusionDocker)


_ensure_bridge()
_register()
