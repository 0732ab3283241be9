"""The engine's environment: its interpreter (given, or a venv that may reuse an installed torch), filled by
pip from requirements/engine.txt, and engine.json, the record that tells the plugin where the engine is."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from installer.errors import InstallError
from installer.layout import REPO, Layout, venv_python
from installer.manifest import Manifest, install_file
from installer.torch_index import index_problem, pip_settings, pypi_torch_note, torch_index, torch_variant


def read_pins(requirements: Path) -> Dict[str, str]:
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _public_version(version: str) -> str:
    return version.split("+", 1)[0].strip()


def installed_version(python: str, package: str) -> Optional[str]:
    """Version of ``package`` installed for ``python`` (read from its metadata: no import, so fast)."""
    code = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([python, "-c", code, package], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def site_packages_of(python: str) -> List[str]:
    code = (
        "import json, site, sysconfig\n"
        "paths = [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]\n"
        "paths += site.getsitepackages() if hasattr(site, 'getsitepackages') else []\n"
        "import importlib.util, os\n"
        "spec = importlib.util.find_spec('torch')  # finds, does not import: torch may be in the user site\n"
        "if spec and spec.submodule_search_locations:\n"
        "    paths.append(os.path.dirname(list(spec.submodule_search_locations)[0]))\n"
        "print(json.dumps(paths))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    unique = []
    for path in json.loads(out.stdout):
        if path not in unique and os.path.isdir(path):
            unique.append(path)
    return unique


def pip_commands(python: str, requirements: Path, index: Optional[str]) -> List[List[str]]:
    """The pip runs that fill the engine environment: torch from its own index first when it needs one."""
    base = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    commands = []
    if index:
        pins = read_pins(requirements)
        torch_pkgs = [f"{name}=={pins[name]}" for name in ("torch", "torchvision") if name in pins]
        commands.append(base + torch_pkgs + ["--index-url", index])
    commands.append(base + ["-r", str(requirements)])
    return commands


def make_venv(manifest: Manifest, layout: Layout, base_python: str, reuse_sites: List[str]) -> str:
    """Create (or repair) the engine venv; it sees the packages of the ``reuse_sites`` folders."""
    target = layout.venv_dir
    python = venv_python(target)
    ours = str(target) in manifest.owned
    if target.exists() and not ours:
        if not (target / "pyvenv.cfg").is_file():
            raise InstallError(
                f"--venv {target} exists and is not a virtual environment; choose another folder"
            )
        print(f"  using the existing virtual environment {target} (it stays on uninstall)")
        return str(python)
    if not python.exists():
        manifest.ensure_dir(target.parent)
        if not ours:
            manifest.claim(target)
        # Made by the interpreter whose packages are reused, so the compiled wheels match its version.
        command = [base_python, "-m", "venv"]
        if reuse_sites:
            command.append("--without-pip")  # pip comes from the reused site-packages
        print(f"  creating {target}")
        subprocess.run(command + [str(target)], check=True)
    pth = Path(site_packages_of(str(python))[0]) / "_blended_diffusion_reuse.pth"
    if reuse_sites:
        pth.write_text("".join(p + "\n" for p in reuse_sites), encoding="utf-8")
    elif pth.exists():
        pth.unlink()  # no longer reusing: pip fills the venv itself
    has_pip = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode == 0
    if not has_pip and subprocess.run([str(python), "-m", "ensurepip", "--upgrade"]).returncode != 0:
        raise InstallError(
            f"the virtual environment {target} has no pip and ensurepip failed; install pip for "
            f"{base_python} (Debian/Ubuntu: apt install python3-venv python3-pip) and run install.py again"
        )
    return str(python)


def setup_environment(manifest: Manifest, layout: Layout, args: argparse.Namespace, platform: str) -> str:
    """The engine's interpreter: given (--python, --no-venv) or a venv filled from requirements/engine.txt."""
    if args.python:
        print(f"  using {args.python} for the engine (no virtual environment)")
        return args.python
    requirements = REPO / "requirements" / "engine.txt"
    pin = read_pins(requirements).get("torch")
    reuse_from = args.reuse_python
    if reuse_from is None and pin:
        current = installed_version(sys.executable, "torch")
        if current and _public_version(current) == pin:
            reuse_from = sys.executable
    reuse_sites: List[str] = []
    base_python = sys.executable
    if reuse_from:
        have = installed_version(reuse_from, "torch")
        if pin and (not have or _public_version(have) != pin):
            print(f"  {reuse_from} has torch {have or 'not installed'}, not {pin}: not reusing it")
        else:
            print(f"  reusing torch {have} (and the other packages) of {reuse_from}")
            reuse_sites = site_packages_of(reuse_from)
            base_python = reuse_from
    python = make_venv(manifest, layout, base_python, reuse_sites)
    variant = torch_variant(args.torch, platform)
    index = None if reuse_sites else torch_index(variant, platform, args.torch_index)
    settings = pip_settings(python)
    shown = {
        k: v for k, v in settings.items() if k in ("index-url", "extra-index-url", "find-links", "proxy")
    }
    if shown:
        print("  your pip configuration is used: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    if index:
        problem = index_problem(index, settings)
        if problem:
            print(f"  the torch index {index} cannot be reached ({problem}):")
            print("  " + pypi_torch_note(platform, settings))
            index = None
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    commands = pip_commands(python, requirements, index)
    for number, command in enumerate(commands):
        print("  " + " ".join(command))
        result = subprocess.run(command, env=env)
        if result.returncode == 0:
            continue
        if index and number == 0:
            # The next command installs torch with the rest, from PyPI (or the user's configured index).
            print(f"  installing torch from {index} failed (pip's message above):")
            print("  " + pypi_torch_note(platform, settings))
            index = None
            continue
        raise InstallError(
            "installing the engine's packages failed (see pip's message above). Check the network or "
            f"proxy, then run install.py again; it picks up where it stopped. torch variant: {variant}"
            + (f", index {index}" if index else "")
        )
    if args.cluster:
        install_cluster_extra(python, env)
    return python


def install_cluster_extra(python: str, env: Dict[str, str]) -> None:
    """Ray for `serve --ray` (requirements/cluster.txt), into the engine's environment."""
    command = [python, "-m", "pip", "install", "-r", str(REPO / "requirements" / "cluster.txt")]
    print("  " + " ".join(command))
    if subprocess.run(command, env=env).returncode != 0:
        raise InstallError(
            "installing Ray (--cluster) failed (see pip's message above); the engine works "
            "without it, only `serve --ray` needs it"
        )


def write_engine_config(manifest: Manifest, layout: Layout, python: str, models: str) -> dict:
    record = {
        "python": python,
        "engine_root": str(layout.engine_root),
        "models": models,
        "weights_dir": str(layout.weights_dir),
    }
    install_file(manifest, (json.dumps(record, indent=2) + "\n").encode("utf-8"), layout.config_path)
    return record


def engine_env(layout: Layout) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(layout.engine_root) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["BLENDED_DIFFUSION_WEIGHTS"] = str(layout.weights_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
