"""The installer behind ``python3 install.py``, one module a step; standard library only (Python >= 3.9).

- :mod:`installer.layout`: where Krita's folders, kritarc and this project's per-user folders are;
- :mod:`installer.manifest`: the record of what an install wrote or moved aside, and the copying that
  keeps it;
- :mod:`installer.copying`: the plugin into Krita's ``pykrita/`` and ``actions/``, the engine code into the
  per-user data folder;
- :mod:`installer.kritarc`: the plugin's ``enable_blended_diffusion`` line, set and restored;
- :mod:`installer.environment`: the engine's interpreter or venv, pip, and the ``engine.json`` record;
- :mod:`installer.torch_index`: which torch build, from which index, and the fall back to PyPI;
- :mod:`installer.weights`: the presets' weights, downloaded by the engine's own downloader;
- :mod:`installer.first_edit`: an example edit with the best models present;
- :mod:`installer.uninstall`: ``--uninstall`` (a rerun of the install is the repair);
- :mod:`installer.plugin_zip`: ``--zip``, the archive for Krita's plugin importer;
- :mod:`installer.cli`: the options, the checks before anything is written, and the steps in order.
"""
