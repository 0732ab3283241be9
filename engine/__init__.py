"""Blended Diffusion engine: the ADM model, the diffusion math, CLIP guidance and the editing loop."""

__version__ = "0.1.0"
