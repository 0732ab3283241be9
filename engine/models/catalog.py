"""Which presets this engine could run, for the plugin's model choice: each preset's method and whether its
required files are in the weights folder (present at the right size; no hashing, so a status stays cheap:
the files are verified when a preset is loaded)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

from engine.models.registry import Preset, get_preset, list_presets
from engine.models.weights import check_file

METHOD_NAMES = {"paper": "Blended Diffusion (paper)", "latent": "Blended Latent Diffusion"}
USABLE = ("ok", "unchecked", "unrecorded")  # present at the right size (a hand-placed folder: no digests)


def installed(preset: Preset, weights_dir: Union[str, os.PathLike, None] = None) -> bool:
    """The preset's required files are there, or made on first use (the seeded ``tiny`` preset)."""
    for spec in preset.required_models:
        if not (spec.generated or check_file(spec, weights_dir, hash_file=False).state in USABLE):
            return False
    return True


def catalog(
    weights_dir: Union[str, os.PathLike, None] = None, loaded: Optional[str] = None
) -> List[Dict[str, Any]]:
    """Every built-in preset (and ``loaded`` when it is a folder of its own) with its method, its method's
    name, its description and whether it is installed, in list_presets() order."""
    names = list_presets()
    if loaded and loaded not in names:
        names.append(loaded)
    out = []
    for name in names:
        try:
            preset = get_preset(name)
        except Exception:  # noqa: BLE001 - a broken preset file must not fail the status
            continue
        out.append(
            {
                "name": name,
                "method": preset.method,
                "method_name": METHOD_NAMES.get(preset.method, preset.method),
                "description": preset.description,
                "installed": installed(preset, weights_dir),
            }
        )
    return out
