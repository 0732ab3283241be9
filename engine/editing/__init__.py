"""The paper's method: Algorithm 2 (and the Algorithm 1 baseline), the extending augmentations and the
CLIP distance, candidate ranking, any-size image handling, and ``editor.edit`` (a job from source + mask to
ranked candidates). ``params`` holds the edit parameters (standard library only).

May import: ``engine.models``, ``engine.errors``, ``bridge.geometry``, torch, numpy, PIL, kornia.
Never ``engine.jobs`` or ``engine.cli``.
"""
