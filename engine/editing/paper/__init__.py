"""Blended Diffusion (Avrahami, Lischinski, Fried, CVPR 2022): the paper's Algorithm 2 and its Algorithm 1
baseline (``blended``), every candidate through it at the model's size (``diffuse``), the quality modes
(``modes``, standard library only) and the full-resolution detail stage over fused tiles (``detail``).

May import ``engine.editing.shared``; never ``engine.editing.latent``.
"""
