"""The engine's side of the plugin: the engine manager (start, reuse, restart, stop a local engine, or
reach a remote one over TLS) and the worker threads that call it, with their relay to the GUI thread.

``manager`` is plain Python over ``bridge.client``; ``workers`` and ``threads`` take QThread and QObject from
``..qt``. Nothing here touches Krita's documents or the widgets: it imports neither ``krita_api``, ``api``
nor ``ui`` (tests/test_imports.py keeps that)."""
