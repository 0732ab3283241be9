"""What the plugin shows and the Qt objects behind it: the docker and its panels, the menu actions, the
controller and its worker threads, the non-modal notices. Everything here needs Qt (through ``..qt``, the
one module that imports PyQt); the Krita API is reached only through ``..krita_api``. The modules one level
up without Qt are plain Python, tested anywhere."""
