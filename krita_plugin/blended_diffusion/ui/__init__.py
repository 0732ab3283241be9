"""What the plugin shows: the docker and its panels, the menu actions, the non-modal notices. Widgets only:
they show the model (``..model``, made by ``..session``) and call it; the state of a job (its group, its
thread, what waits for its reply) is the model's, never a widget's (tests/krita/test_model_unit.py checks
it). Qt comes through ``..qt`` (the one module that imports PyQt); Krita's base classes through
``..krita_api``."""
