"""install.py's command line: its options, the checks before anything is written, and the steps in order."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from installer.copying import check_sources, install_engine_code, install_plugin
from installer.environment import setup_environment, write_engine_config
from installer.errors import InstallError
from installer.first_edit import run_first_edit
from installer.kritarc import enable_plugin
from installer.layout import REPO, Layout, make_layout
from installer.manifest import Manifest
from installer.plugin_zip import build_zip
from installer.uninstall import uninstall
from installer.weights import default_weights_present, download_weights, presets_to_download, weights_help

DESCRIPTION = "Install Blended Diffusion for Krita: ``python3 install.py`` (``--help`` for the options)."


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--krita-dir", help="Krita's resource folder (default: the per-user one of this OS)")
    parser.add_argument("--kritarc", help="Krita's kritarc file (default: the per-user one of this OS)")
    parser.add_argument("--venv", help="where to create the engine's virtual environment")
    parser.add_argument(
        "--python", help="use this existing Python for the engine instead of a virtual environment"
    )
    parser.add_argument(
        "--no-venv", action="store_true", help="use the Python running install.py for the engine"
    )
    parser.add_argument(
        "--reuse-python",
        metavar="PATH",
        help="make the venv see this Python's packages (its torch must match the pin)",
    )
    parser.add_argument(
        "--torch",
        choices=("auto", "cpu", "cuda", "default"),
        default="auto",
        help="which torch build to install (auto: CUDA when nvidia-smi is found, else CPU)",
    )
    parser.add_argument(
        "--torch-index", help="package index URL for torch/torchvision (e.g. a CUDA version's)"
    )
    parser.add_argument("--weights-dir", help="where the weights go (default: the engine's per-user folder)")
    parser.add_argument(
        "--models", default="default", help="preset the plugin uses (recorded in engine.json)"
    )
    parser.add_argument(
        "--engine-from-repo",
        action="store_true",
        help="run the engine from this checkout instead of an installed copy (for development)",
    )
    parser.add_argument("--no-plugin", action="store_true", help="set up only the engine, not Krita's files")
    parser.add_argument("--no-weights", action="store_true", help="do not download the default weights")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also install Ray (requirements/cluster.txt) for `python -m engine serve --ray` on a server "
        "(docs/cluster.md)",
    )
    parser.add_argument(
        "--no-first-edit", action="store_true", help="skip the first edit on an example image"
    )
    parser.add_argument(
        "--first-edit-args",
        default="",
        metavar="ARGS",
        help='extra options for the first edit\'s `python -m engine edit`, e.g. "--device cpu"',
    )
    parser.add_argument("--uninstall", action="store_true", help="remove everything a previous install added")
    parser.add_argument(
        "--keep-weights", action="store_true", help="with --uninstall: keep downloaded weights"
    )
    parser.add_argument("--zip", metavar="PATH", help="only build the archive for Krita's plugin importer")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    if args.no_venv and not args.python:
        args.python = sys.executable
    if args.python and (args.venv or args.reuse_python):
        parser.error(
            "--python/--no-venv use an existing interpreter; they do not go with --venv/--reuse-python"
        )
    return args


def validate(args: argparse.Namespace, layout: Layout) -> None:
    """Check the input before anything is written, so bad input changes nothing."""
    for flag, attr in (("--python", "python"), ("--reuse-python", "reuse_python")):
        value = getattr(args, attr)
        if value:
            found = value if os.path.isfile(value) else shutil.which(value)
            if not found or not os.access(found, os.X_OK):
                raise InstallError(f"{flag} {value}: no such executable")
            # absolute but not resolved: a venv's python is a link that must stay a venv's python
            setattr(args, attr, os.path.abspath(found))
    if args.krita_dir and Path(args.krita_dir).exists() and not Path(args.krita_dir).is_dir():
        raise InstallError(f"--krita-dir {args.krita_dir} is not a folder")
    if layout.kritarc.is_dir():
        raise InstallError(f"kritarc {layout.kritarc} is a folder")
    if layout.weights_dir.exists() and not layout.weights_dir.is_dir():
        raise InstallError(f"the weights folder {layout.weights_dir} is a file")
    if not args.models:
        raise InstallError("--models must name a preset or a folder")
    check_sources()


def krita_is_running() -> bool:
    """Best effort, Linux only (/proc): a running Krita reads kritarc and pykrita/ only when it starts."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "krita":
                return True
        except OSError:
            continue
    return False


def confirm(args: argparse.Namespace, question: str) -> bool:
    if args.yes or not sys.stdin.isatty():
        return True
    answer = input(f"{question} [Y/n] ").strip().lower()
    return answer in ("", "y", "yes")


def install(args: argparse.Namespace, layout: Layout, platform: str) -> int:
    manifest = Manifest.load(layout.manifest)
    verb = "Repairing/upgrading" if manifest.exists else "Installing"
    print(f"{verb} Blended Diffusion for Krita from {REPO}")
    if not args.no_plugin:
        print(f"  Krita resources: {layout.resource_dir}\n  kritarc:         {layout.kritarc}")
    print(f"  engine:          {layout.engine_root}\n  engine record:   {layout.config_path}")
    if not args.no_plugin and krita_is_running():
        print("  Krita is running: restart it after the install so it loads the plugin.")
    if not confirm(args, "Continue?"):
        return 1
    manifest.ensure_dir(layout.data_dir)
    manifest.info = {"repo": str(REPO), "platform": platform, "weights_dir": str(layout.weights_dir)}
    manifest.save()
    if not args.no_plugin:
        print("[1/6] plugin files")
        install_plugin(manifest, layout)
        print("[2/6] enabling the plugin in kritarc")
        enable_plugin(manifest, layout)
    print("[3/6] engine code")
    install_engine_code(manifest, layout)
    print("[4/6] engine environment")
    python = setup_environment(manifest, layout, args, platform)
    record = write_engine_config(manifest, layout, python, args.models)
    print(f"  recorded the engine in {layout.config_path}: {json.dumps(record)}")
    weights_ok = default_weights_present(layout)
    if args.no_weights:
        print("[5/6] weights: skipped (--no-weights)")
    else:
        presets = presets_to_download(args.models)
        print(f"[5/6] weights ({', '.join(presets)}) into {layout.weights_dir}")
        weights_ok = download_weights(manifest, layout, python)
        for preset in presets[1:]:
            download_weights(manifest, layout, python, preset)
    status = 0
    if args.no_first_edit:
        print("[6/6] first edit: skipped (--no-first-edit)")
    else:
        print("[6/6] first edit on an example image")
        status = run_first_edit(manifest, layout, python, weights_ok, shlex.split(args.first_edit_args))
    print("\nDone. Start Krita; the Blended Diffusion docker is under Settings > Dockers.")
    if not weights_ok:
        print("The default weights are not installed yet. " + weights_help(layout, python))
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the subprocesses' output
    try:
        if args.zip:
            build_zip(Path(args.zip))
            return 0
        layout = make_layout(args, os.environ, sys.platform)
        if args.uninstall:
            if not confirm(args, f"Remove what install.py added (manifest {layout.manifest})?"):
                return 1
            return uninstall(layout, keep_weights=args.keep_weights)
        validate(args, layout)
        return install(args, layout, sys.platform)
    except InstallError as exc:
        print(f"install.py: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"install.py: error: {' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}",
            file=sys.stderr,
        )
        return 1
