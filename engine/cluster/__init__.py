"""The engine on a Ray cluster, behind the same bridge server: ``python -m engine serve --ray ADDRESS|local``.

The bridge server stays the one entry point (token, TLS); Ray never faces the network. A job's candidates
are split by seed into shards (``shards.py``, no Ray), each run by a worker actor holding the preset's
models (``worker.py``: the same ``engine.jobs`` runner as a single engine, on a subset of the seeds), and the
results are ranked once over all candidates on the server. ``scheduler.py`` hands shards to free workers,
round robin over clients, and reruns a dead worker's shard elsewhere; ``service.py`` starts the pool.

May import: ``bridge``, ``engine.jobs``, ``engine.editing``, ``engine.models``, ``engine.errors``, ray.
Imported only by ``engine.cli``; nothing else of the engine imports it.
"""
