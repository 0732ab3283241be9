"""The editing methods, a folder each, and what they share:

  editor.py, extend.py   the job entry points: ``edit()`` and ``extend()``, dispatching on the models' method
  timing.py, admission.py  a job's time and memory estimates, for both methods
  paper/     Blended Diffusion (the paper): Algorithm 2 and the Algorithm 1 baseline, the model-size pass,
             the quality modes, the full-resolution detail stage
  latent/    Blended Latent Diffusion (the authors' successor): the latent loop, its edit and extend windows
  shared/    the stages both methods share: parameters, prepare, ranking (CLIP over the augmentations),
             results and the composite, any-size imaging, limits, the job's running state

May import: ``engine.models``, ``engine.errors``, ``bridge.geometry``, ``bridge.limits``, torch, numpy, PIL,
kornia, diffusers. Never ``engine.jobs``, ``engine.cli`` or ``engine.cluster``.
"""
