"""Toy world: synthetic scenes, tiny trained ADM and CLIP, and the semantic evaluation of edits."""
