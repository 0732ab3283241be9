"""The plugin's state as plain data and logic: no Qt, no Krita, so it is unit-tested anywhere.

``document``: the state of each document (its candidate group and rounds, its job in flight); ``jobs``: a
job and the action pending on its reply, a typed union; ``options``: the docker's settings as typed values;
``plugin``/``review``: the docker's logic over them (edit, extend, More / Vary, choose / Accept / Discard,
messages and questions); ``ports``: what that logic asks of Krita's documents, the worker threads and the
non-modal windows, handed in by ``blended_diffusion.session``. It imports the plain modules one level up
(params, rounds, workflow, recommended, ...), never ``qt``, ``krita_api``, ``api``, ``backend`` or ``ui``
(tests/test_imports.py keeps that)."""
