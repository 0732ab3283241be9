"""The engine's command lines, one module per command, each with ``add_arguments(parser)`` and
``run(args) -> int``: ``models`` (models and download), ``edit``, ``serve``.

May import anything in ``engine`` and ``bridge``, but heavy packages (torch, numpy, PIL) only inside
``run()``: ``engine/__main__.py`` imports every command module to build the argument parser.
"""
