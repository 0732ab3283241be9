"""``python -m engine <command>``: models, download, edit, extend, serve, doctor.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; they are
imported only when chosen, so ``python -m engine models`` does not pay for torch start-up twice.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "models": ("engine.cli.models", "list presets and whether their weight files are present and valid"),
    "download": ("engine.cli.models", "download (and verify) the weight files of a preset"),
    "edit": ("engine.cli.edit", "edit an image region guided by a text prompt"),
    "extend": ("engine.cli.extend", "extend the canvas on any sides, guided by a prompt per side"),
    "serve": ("engine.cli.serve", "serve editing jobs to the Krita plugin over an authenticated socket"),
    "doctor": ("engine.cli.doctor", "report versions, device, weight files, estimated time and log path"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if module_name == "engine.cli.models":
            module.add_arguments(sub_parser, name)
        else:
            module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    module = modules[args.command]
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
