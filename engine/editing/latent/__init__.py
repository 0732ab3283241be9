"""Blended Latent Diffusion (Avrahami, Fried, Lischinski, SIGGRAPH 2023) on a diffusers preset: the loop
(``blended_latent``), ``edit()``'s stages around it (``edit``) and an extension's per-window call
(``extend_window``).

May import ``engine.editing.shared``; never ``engine.editing.paper``.
"""
