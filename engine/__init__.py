"""Blended Diffusion engine: the ADM model, the diffusion math, CLIP guidance and the editing loop.

Packages, and which may import which (checked by tests/test_imports.py):

- ``engine.errors``: the errors a user can meet; imports nothing of the project.
- ``engine.models``: networks, weights, registry, devices; imports ``engine.errors``.
- ``engine.editing``: the paper's method; imports ``engine.models``, ``engine.errors``, ``bridge.geometry``.
- ``engine.jobs``: the job kinds the server runs; imports ``engine.editing``, ``engine.models``, ``bridge``.
- ``engine.cluster``: ``serve --ray``, the jobs on Ray actors; imports ``engine.jobs``, ``engine.editing``,
  ``bridge``; imported only by ``engine.cli``.
- ``engine.cli``: the command lines; imports any of the above.
"""

__version__ = "0.1.0"
