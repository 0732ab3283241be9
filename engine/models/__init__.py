"""The networks and their files: the ADM UNet, the diffusion math, CLIP and LPIPS, the model registry
(specs and presets as data in ``specs/`` and ``presets/``), weight download and verification, loading, and
the choice of device.

May import: the standard library, torch and the model libraries, ``engine.errors``. Never ``engine.editing``,
``engine.jobs`` or ``engine.cli``: the models know nothing of the editing job that uses them.
"""
