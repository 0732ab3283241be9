"""The stages both editing methods share: the parameters (``params``, standard library only), the context
square and mask (``prepare``), CLIP ranking over the extending augmentations (``augment``, ``ranking``), the
candidates and the soft-mask composite (``results``), any-size images (``imaging``), the engine's limits
(``limits``) and what a running job shares (``running``).

Imports neither method's folder: both build on it.
"""
