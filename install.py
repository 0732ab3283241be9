#!/usr/bin/env python3
"""Install Blended Diffusion for Krita: ``python3 install.py`` (``--help`` for the options).

Standard library only (Python >= 3.9), so it runs on a fresh machine. It

1. copies the plugin (``blended_diffusion.desktop``, the ``blended_diffusion`` package and the ``bridge``
   package it imports) into Krita's ``pykrita/`` folder and the ``.action`` file into ``actions/``;
2. enables the plugin in ``kritarc`` (``[python]`` ``enable_blended_diffusion=true``), keeping other lines;
3. copies the engine code (``engine``, ``bridge``, ``toyworld``, ``resources``) into the per-user data folder,
   so the installed plugin keeps working when this checkout moves or goes away;
4. creates the engine's virtual environment from ``requirements/engine.txt`` (reusing an installed torch that
   satisfies the pin) and records where the engine is in ``engine.json`` for the plugin;
5. downloads the default weights with the engine's own downloader (progress, resume, SHA-256);
6. runs a first edit on an example image and prints where the candidates are.

Everything it creates is listed in a manifest, so running it again repairs or upgrades that, and
``--uninstall`` removes exactly that and restores what it replaced (kritarc's line included).
``--zip PATH`` instead builds the archive Krita's Tools > Scripts > Import Python Plugin from File accepts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import ssl
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parent
PLUGIN_NAME = "blended_diffusion"
APP_NAME = "blended-diffusion"
ENABLE_KEY = f"enable_{PLUGIN_NAME}"
MANIFEST_NAME = "install-manifest.json"
MANIFEST_VERSION = 1
# What the engine needs at run time, copied into the engine root (resources holds the shipped toy models).
ENGINE_PARTS = ("engine", "bridge", "toyworld", "resources")
# Krita's importer only extracts the package folder the .desktop names, so the zip carries bridge inside it.
ZIP_VENDOR_DIR = "_vendor"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128"
# How long to wait for the torch index before installing PyPI's torch instead: a proxy that drops the
# connection would otherwise hold pip for its timeout (default 15 s) times its retries (5).
INDEX_PROBE_TIMEOUT = 15.0
IGNORED_NAMES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".DS_Store")
IGNORED_SUFFIXES = (".pyc", ".pyo")
# Fixed timestamp so the same sources give the same zip bytes.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


class InstallError(Exception):
    """A problem the user can fix; the message is shown as is and nothing has been changed."""


# ----------------------------------------------------------------------------------------- where things go


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or env.get("USERPROFILE") or os.path.expanduser("~"))


def _is_windows(platform: str) -> bool:
    return platform.startswith("win")


def krita_resource_dir(env: Mapping[str, str], platform: str) -> Path:
    """Krita's per-user resource folder (pykrita/ and actions/ live in it)."""
    home = _home(env)
    if _is_windows(platform):
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "krita"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "krita"
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "krita"


def kritarc_path(env: Mapping[str, str], platform: str) -> Path:
    home = _home(env)
    if _is_windows(platform):
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "kritarc"
    if platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kritarc"


def user_data_dir(env: Mapping[str, str], platform: str) -> Path:
    """Per-user data folder of this project: venv, engine copy, weights, manifest."""
    home = _home(env)
    if _is_windows(platform):
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME


def engine_config_path(env: Mapping[str, str], platform: str) -> Path:
    """Same rule as the plugin's ``blended_diffusion.config.engine_config_path()``."""
    explicit = env.get("BLENDED_DIFFUSION_CONFIG")
    if explicit:
        return Path(explicit)
    home = _home(env)
    if _is_windows(platform):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return base / APP_NAME / "engine.json"


def default_weights_dir(env: Mapping[str, str], platform: str) -> Path:
    """Same rule as the engine's ``registry.default_weights_dir()``."""
    explicit = env.get("BLENDED_DIFFUSION_WEIGHTS")
    if explicit:
        return Path(explicit).expanduser()
    return user_data_dir(env, platform) / "weights"


def venv_python(env_dir: Path, platform: str = sys.platform) -> Path:
    return env_dir / ("Scripts/python.exe" if _is_windows(platform) else "bin/python")


@dataclass
class Layout:
    resource_dir: Path
    kritarc: Path
    data_dir: Path
    config_path: Path
    weights_dir: Path
    venv_dir: Path
    engine_root: Path

    @property
    def manifest(self) -> Path:
        return self.data_dir / MANIFEST_NAME

    @property
    def pykrita(self) -> Path:
        return self.resource_dir / "pykrita"

    @property
    def actions(self) -> Path:
        return self.resource_dir / "actions"

    @property
    def backup_dir(self) -> Path:
        return self.data_dir / "replaced"

    @property
    def first_edit_dir(self) -> Path:
        return self.data_dir / "first-edit"


def make_layout(args: argparse.Namespace, env: Mapping[str, str], platform: str) -> Layout:
    data_dir = user_data_dir(env, platform)
    return Layout(
        resource_dir=Path(args.krita_dir).expanduser().absolute()
        if args.krita_dir
        else krita_resource_dir(env, platform),
        kritarc=Path(args.kritarc).expanduser().absolute() if args.kritarc else kritarc_path(env, platform),
        data_dir=data_dir,
        config_path=engine_config_path(env, platform),
        weights_dir=Path(args.weights_dir).expanduser().absolute()
        if args.weights_dir
        else default_weights_dir(env, platform),
        venv_dir=Path(args.venv).expanduser().absolute() if args.venv else data_dir / "venv",
        engine_root=REPO if args.engine_from_repo else data_dir / "engine",
    )


# ------------------------------------------------------------------------------------------------- kritarc


def _split_lines(text: str) -> List[str]:
    return text.splitlines(keepends=True)


def _newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _section_bounds(lines: Sequence[str], section: str) -> Optional[tuple]:
    """(header index, end index exclusive) of ``[section]``, or None."""
    start = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if start is None:
            if stripped == f"[{section}]":
                start = i
        elif stripped.startswith("[") and stripped.endswith("]"):
            return start, i
    return None if start is None else (start, len(lines))


def _key_of(line: str) -> Optional[str]:
    if "=" not in line or line.lstrip().startswith(("#", ";")):
        return None
    return line.split("=", 1)[0].strip()


def enable_in_kritarc(text: str) -> tuple:
    """Return (new text, previous line or None, whether the [python] section was added)."""
    newline = _newline_of(text)
    wanted = f"{ENABLE_KEY}=true"
    lines = _split_lines(text)
    bounds = _section_bounds(lines, "python")
    if bounds is None:
        prefix = text
        if prefix and not prefix.endswith(("\n", "\r")):
            prefix += newline
        if prefix.strip():
            prefix += newline  # Krita separates groups by a blank line
        return prefix + f"[python]{newline}{wanted}{newline}", None, True
    start, end = bounds
    for i in range(start + 1, end):
        if _key_of(lines[i]) == ENABLE_KEY:
            previous = lines[i].rstrip("\r\n")
            ending = lines[i][len(previous) :] or newline
            lines[i] = wanted + ending
            return "".join(lines), previous, False
    # Insert after the section's last non-blank line so the blank separator stays before the next group.
    insert_at = end
    while insert_at - 1 > start and not lines[insert_at - 1].strip():
        insert_at -= 1
    if not lines[insert_at - 1].endswith(("\n", "\r")):
        lines[insert_at - 1] += newline
    lines.insert(insert_at, wanted + newline)
    return "".join(lines), None, False


def restore_in_kritarc(text: str, previous: Optional[str], section_added: bool) -> str:
    """Undo :func:`enable_in_kritarc` on a kritarc that may have changed since (Krita rewrites it)."""
    lines = _split_lines(text)
    bounds = _section_bounds(lines, "python")
    if bounds is None:
        return text
    start, end = bounds
    for i in range(start + 1, end):
        if _key_of(lines[i]) == ENABLE_KEY:
            if previous is not None:
                ending = lines[i][len(lines[i].rstrip("\r\n")) :]
                lines[i] = previous + ending
            else:
                del lines[i]
                end -= 1
            break
    if section_added and not any(line.strip() for line in lines[start + 1 : end]):
        del lines[start:end]
        # Drop the blank separator line that was added before the section.
        if start > 0 and start == len(lines) and not lines[start - 1].strip():
            del lines[start - 1]
    return "".join(lines)


# ------------------------------------------------------------------------------------------------ manifest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Manifest:
    """What an install created or replaced, so a rerun repairs it and --uninstall undoes exactly that.

    ``owned``: paths (files or folders) this installer wrote; ``created_dirs``: folders it had to create
    (removed on uninstall only when empty); ``replaced``: paths that existed before and were moved aside into
    the backup folder, restored on uninstall; ``kritarc``: how to restore kritarc's line.
    """

    def __init__(self, path: Path, data: Optional[dict] = None):
        self.path = path
        data = data or {}
        self.owned: List[str] = list(data.get("owned", []))
        self.created_dirs: List[str] = list(data.get("created_dirs", []))
        self.replaced: Dict[str, str] = dict(data.get("replaced", {}))
        self.kritarc: Optional[dict] = data.get("kritarc")
        self.info: dict = dict(data.get("info", {}))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InstallError(f"cannot read the install manifest {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise InstallError(f"{path} is not a manifest this installer understands")
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def save(self) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "owned": self.owned,
            "created_dirs": self.created_dirs,
            "replaced": self.replaced,
            "kritarc": self.kritarc,
            "info": self.info,
        }
        write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def ensure_dir(self, folder: Path) -> None:
        """Create ``folder`` and missing parents, remembering the ones created (top-down)."""
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            path.mkdir()
            if str(path) not in self.created_dirs:
                self.created_dirs.append(str(path))
        if missing and self.path.parent.is_dir():
            self.save()  # so an install that stops half-way can still be uninstalled

    def claim(self, target: Path) -> None:
        """Make ``target`` ours before writing it: an existing foreign path is moved aside, not lost."""
        key = str(target)
        if key in self.owned:
            return
        if target.exists() or target.is_symlink():
            self.ensure_dir(self.path.parent)
            backups = self.path.parent / "replaced"
            self.ensure_dir(backups)
            backup = backups / f"{len(self.replaced):03d}-{target.name}"
            shutil.move(str(target), str(backup))
            self.replaced[key] = str(backup)
        self.owned.append(key)
        self.save()


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ignore(_folder: str, names: List[str]) -> List[str]:
    return [n for n in names if n in IGNORED_NAMES or n.endswith(IGNORED_SUFFIXES)]


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def install_tree(manifest: Manifest, source: Path, target: Path) -> None:
    """Replace ``target`` by a copy of ``source``, staged beside it so a failure leaves the old one."""
    manifest.ensure_dir(target.parent)
    staging = target.parent / f".{target.name}.installing"
    remove_path(staging)
    shutil.copytree(source, staging, ignore=_ignore)
    manifest.claim(target)
    remove_path(target)
    os.replace(staging, target)


def install_file(manifest: Manifest, source_bytes: bytes, target: Path) -> None:
    manifest.ensure_dir(target.parent)
    manifest.claim(target)
    write_atomic(target, source_bytes)


# ------------------------------------------------------------------------------------------------- the steps


def check_sources() -> None:
    needed = [
        REPO / "krita_plugin" / f"{PLUGIN_NAME}.desktop",
        REPO / "krita_plugin" / f"{PLUGIN_NAME}.action",
        REPO / "krita_plugin" / PLUGIN_NAME / "__init__.py",
        REPO / "bridge" / "__init__.py",
        REPO / "engine" / "__main__.py",
        REPO / "requirements" / "engine.txt",
    ]
    missing = [str(p.relative_to(REPO)) for p in needed if not p.is_file()]
    if missing:
        raise InstallError(f"this checkout ({REPO}) is incomplete; missing: {', '.join(missing)}")


def install_plugin(manifest: Manifest, layout: Layout) -> None:
    plugin_src = REPO / "krita_plugin"
    install_file(
        manifest,
        (plugin_src / f"{PLUGIN_NAME}.desktop").read_bytes(),
        layout.pykrita / f"{PLUGIN_NAME}.desktop",
    )
    install_tree(manifest, plugin_src / PLUGIN_NAME, layout.pykrita / PLUGIN_NAME)
    install_tree(manifest, REPO / "bridge", layout.pykrita / "bridge")
    install_file(
        manifest,
        (plugin_src / f"{PLUGIN_NAME}.action").read_bytes(),
        layout.actions / f"{PLUGIN_NAME}.action",
    )


def enable_plugin(manifest: Manifest, layout: Layout) -> None:
    path = layout.kritarc
    existed = path.is_file()
    before = path.read_bytes() if existed else b""
    try:
        text = before.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InstallError(f"{path} is not UTF-8 text; enable the plugin in Krita instead") from exc
    new_text, previous, section_added = enable_in_kritarc(text)
    new_bytes = new_text.encode("utf-8")
    record = manifest.kritarc
    if record is None:  # first install: remember the state to restore
        record = {
            "path": str(path),
            "existed": existed,
            "previous_line": previous,
            "section_added": section_added,
        }
        if existed:
            manifest.ensure_dir(layout.backup_dir)
            backup = layout.backup_dir / "kritarc.before-install"
            write_atomic(backup, before)
            record["backup"] = str(backup)
    manifest.ensure_dir(path.parent)
    if new_bytes != before:
        write_atomic(path, new_bytes)
    record["written_sha256"] = sha256_bytes(new_bytes)
    manifest.kritarc = record
    manifest.save()


def install_engine_code(manifest: Manifest, layout: Layout) -> None:
    if layout.engine_root == REPO:
        return
    manifest.ensure_dir(layout.engine_root)
    for part in ENGINE_PARTS:
        source = REPO / part
        if source.is_dir():
            install_tree(manifest, source, layout.engine_root / part)


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


def torch_variant(choice: str, platform: str) -> str:
    if choice != "auto":
        return choice
    if platform == "darwin":
        return "default"
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def torch_index(variant: str, platform: str, override: Optional[str]) -> Optional[str]:
    """The package index torch comes from; None means PyPI (CUDA wheels on Linux, CPU/MPS elsewhere)."""
    if override:
        return override
    if variant == "cpu" and platform != "darwin":
        return TORCH_CPU_INDEX
    if variant == "cuda" and _is_windows(platform):
        return TORCH_CUDA_INDEX_WINDOWS
    return None


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


def pip_settings(python: str) -> Dict[str, str]:
    """The user's pip options that decide where packages come from, as pip itself reads them
    (``pip config list``: the configuration files and PIP_* variables; variables win, then [install]).
    Keys are option names: index-url, extra-index-url, find-links, proxy, cert, ..."""
    try:
        out = subprocess.run(
            [python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rank = {":env:": 3, "install": 2, "global": 1}
    found: Dict[str, tuple] = {}
    for line in out.splitlines():
        match = re.match(r"^([^=]+?)\.([A-Za-z0-9_-]+)=(.*)$", line.strip())
        if not match or match.group(1) not in rank:
            continue
        section, option, value = match.groups()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if option not in found or rank[section] >= found[option][0]:
            found[option] = (rank[section], value)
    return {option: value for option, (_, value) in found.items()}


def index_problem(
    index: str, settings: Mapping[str, str], timeout: float = INDEX_PROBE_TIMEOUT
) -> Optional[str]:
    """Why the package index ``index`` cannot serve torch, or None when its torch page answers.

    Asks for the index's ``torch/`` page (PEP 503) the way pip would: through pip's ``proxy`` setting or
    the usual *_proxy variables, trusting pip's ``cert`` bundle when one is configured."""
    page = index.rstrip("/") + "/torch/"
    parsed = urllib.parse.urlparse(page)
    if parsed.scheme == "file":
        folder = Path(urllib.request.url2pathname(parsed.path))
        return None if folder.is_dir() else f"{folder} does not exist"
    if parsed.scheme not in ("http", "https"):
        return f"{index} is not an http(s) or file URL"
    handlers: List[urllib.request.BaseHandler] = []
    proxy = settings.get("proxy")
    if proxy:
        proxy = proxy if "://" in proxy else "http://" + proxy  # pip accepts [user:pass@]host:port
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    cert = settings.get("cert")
    context = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None)
    handlers.append(urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(page, headers={"User-Agent": "blended-diffusion install.py"})
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        return f"{page} answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"{page}: {exc.reason}"
    except (OSError, ValueError) as exc:  # timeouts, resets, bad proxy URLs
        return f"{page}: {exc}"
    return None


def pypi_torch_note(platform: str, settings: Mapping[str, str]) -> str:
    """What installing torch from PyPI (or the user's own index) instead of the dedicated index means."""
    source = f"your pip index {settings['index-url']}" if settings.get("index-url") else "PyPI"
    if platform.startswith("linux"):
        meaning = (
            f"On Linux {source}'s torch is the CUDA build: a larger download (about 3 GB with its NVIDIA "
            "libraries, against about 200 MB for the CPU build); it also runs on the CPU."
        )
    elif _is_windows(platform):
        meaning = (
            f"On Windows {source}'s torch is the CPU build: the engine runs on the CPU; for an NVIDIA GPU "
            "install torch from a CUDA index later (docs/install.md)."
        )
    else:
        meaning = f"{source}'s torch for this system is its default build (CPU, and MPS on Apple silicon)."
    return f"installing torch from {source} instead. {meaning}"


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


def preset_files(preset: str) -> List[dict]:
    """The weight files of a built-in preset (name, SHA-256, URLs), read from the engine's data files."""
    models_dir = REPO / "engine" / "models"
    try:
        data = json.loads((models_dir / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
        files = []
        for kind in ("diffusion", "clip"):
            entry = data.get(kind)
            if isinstance(entry, str):
                entry = json.loads((models_dir / "specs" / f"{entry}.json").read_text(encoding="utf-8"))
            if isinstance(entry, dict) and entry.get("file") and not entry.get("generate"):
                files.append(
                    {"file": entry["file"], "sha256": entry.get("sha256"), "urls": entry.get("urls", [])}
                )
        return files
    except (OSError, ValueError):
        return []


def weights_help(layout: Layout, python: str, preset: str = "default") -> str:
    lines = [f"Put these files in {layout.weights_dir}:"]
    for spec in preset_files(preset):
        lines.append(f"  {spec['file']}  (SHA-256 {spec['sha256']})")
        lines.extend(f"      from {url}" for url in spec["urls"])
    lines.append("or run install.py again when online (a partial download resumes). Check them with:")
    lines.append(f"  cd {layout.engine_root} && {python} -m engine models")
    return "\n".join(lines)


def claim_weights_dir(manifest: Manifest, layout: Layout) -> None:
    """A weights folder this install makes (downloads, generated ``tiny`` files) goes on uninstall."""
    if not layout.weights_dir.exists():
        manifest.ensure_dir(layout.weights_dir.parent)
        manifest.claim(layout.weights_dir)
        layout.weights_dir.mkdir()


def presets_to_download(models: str) -> List[str]:
    """The default weights, and the built-in preset the plugin is set to use when it is another one
    (``--models sd15`` fetches Stable Diffusion 1.5 at its pinned revision as well)."""
    builtin = (REPO / "engine" / "models" / "presets" / f"{models}.json").is_file()
    return ["default"] + ([models] if builtin and Path(models).name == models and models != "default" else [])


def download_weights(manifest: Manifest, layout: Layout, python: str, preset: str = "default") -> bool:
    """``python -m engine download PRESET``: it states the size and the licence before it starts, resumes a
    partial file and checks every file's SHA-256."""
    claim_weights_dir(manifest, layout)
    command = [python, "-m", "engine", "download", preset]
    print("  " + " ".join(command))
    result = subprocess.run(command, cwd=str(layout.engine_root), env=engine_env(layout))
    if result.returncode == 0:
        return True
    print(f"\nThe {preset} weights could not be downloaded (offline, or the server refused).")
    if preset == "default":
        print(weights_help(layout, python))
    else:
        print(f"Run install.py again, or `cd {layout.engine_root} && {python} -m engine download {preset}`.")
    print("The rest of the install continues.\n")
    return False


def default_weights_present(layout: Layout) -> bool:
    files = preset_files("default")
    return bool(files) and all((layout.weights_dir / spec["file"]).is_file() for spec in files)


DEFAULT_PROMPT = "a red sailboat"
# Without a mask file beside the example, the first edit repaints this box (fractions of width and height).
DEFAULT_MASK_BOX = (0.25, 0.5, 0.45, 0.75)


def png_size(path: Path) -> tuple:
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        raise InstallError(f"{path} is not a PNG file")
    return struct.unpack(">II", header[16:24])


def write_box_mask(path: Path, size: tuple, box: tuple) -> None:
    """A grey-scale PNG mask, white inside ``box`` (fractions of the size), black elsewhere."""
    width, height = size
    x0, y0, x1, y1 = int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height)
    inside = b"\x00" * x0 + b"\xff" * (x1 - x0) + b"\x00" * (width - x1)
    outside = b"\x00" * width
    raw = b"".join(b"\x00" + (inside if y0 <= y < y1 else outside) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    write_atomic(path, png)


# The scene the toy models can edit (shapes on a plain background, 128 px), with its mask and prompt.
TOY_EXAMPLE = "toy_scene.png"


def _example_files(image: Path) -> tuple:
    """(image, ``<name>_mask.png`` or None, the prompt in ``<name>.txt`` or DEFAULT_PROMPT)."""
    mask = image.with_name(image.stem + "_mask.png")
    prompt_file = image.with_suffix(".txt")
    prompt = prompt_file.read_text(encoding="utf-8").strip() if prompt_file.is_file() else DEFAULT_PROMPT
    return image, (mask if mask.is_file() else None), prompt


def pick_example(toy: bool = False) -> tuple:
    """(image, mask or None, prompt) of the example to edit first, from resources/examples/.

    The toy models only know their synthetic shapes: with ``toy`` the toy scene (TOY_EXAMPLE) is used.
    Otherwise ``examples.json`` (a list of {"image", "mask", "prompt"}) wins; else the first PNG/JPEG that
    is neither a mask nor the toy scene, with ``<name>_mask.png`` and ``<name>.txt`` (the prompt) when they
    exist.
    """
    folder = REPO / "resources" / "examples"
    if toy and (folder / TOY_EXAMPLE).is_file():
        return _example_files(folder / TOY_EXAMPLE)
    listing = folder / "examples.json"
    if listing.is_file():
        try:
            entries = json.loads(listing.read_text(encoding="utf-8"))
            entry = entries[0] if isinstance(entries, list) else entries["examples"][0]
            mask = folder / entry["mask"] if entry.get("mask") else None
            return folder / entry["image"], mask, entry.get("prompt") or DEFAULT_PROMPT
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
    images = sorted(
        p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg") and "mask" not in p.stem
    )
    if not images:
        raise InstallError(f"no example image in {folder}")
    natural = [p for p in images if p.name != TOY_EXAMPLE]
    return _example_files((natural or images)[0])


def uses_toy_models(models: str) -> bool:
    """True for what first_edit_models returns for the toy models: the preset name or its folder."""
    return models not in ("default", "tiny")


def first_edit_models(weights_ok: bool, engine_root: Path) -> tuple:
    """(preset, note): the default weights when present, else the shipped toy models, else ``tiny``."""
    if weights_ok:
        return "default", "with the default weights"
    toy_note = "with the shipped toy models, because the default weights are absent: not real results"
    if (engine_root / "engine" / "models" / "presets" / "toy.json").is_file():
        return "toy", toy_note
    toy_folder = engine_root / "resources" / "models" / "toy"
    if (toy_folder / "preset.json").is_file():
        return str(toy_folder), toy_note
    return "tiny", (
        "with the random 'tiny' models, because the default weights and the toy models are absent: "
        "they only check that the pipeline runs, the pictures are noise"
    )


def first_edit_command(
    python: str, image: Path, mask: Path, prompt: str, models: str, out_dir: Path, extra: Sequence[str] = ()
) -> List[str]:
    # The reference's schedule with the real weights; the toy preset's own recommended settings (its
    # edit_defaults, which the engine applies); a short schedule for the random tiny models, which only show
    # that the pipeline runs. ``extra`` comes last, so its options win.
    command = [python, "-m", "engine", "edit", "--prompt", prompt, "--init_image", str(image)]
    command += ["--mask", str(mask), "--output_path", str(out_dir), "--models", models]
    if uses_toy_models(models):
        return command + [*extra]
    schedule = [] if models == "default" else ["--timestep_respacing", "25", "--skip_timesteps", "10"]
    return command + ["--batch_size", "2", "--iterations_num", "1", *schedule, *extra]


def run_first_edit(
    manifest: Manifest, layout: Layout, python: str, weights_ok: bool, extra: Sequence[str] = ()
) -> int:
    models, note = first_edit_models(weights_ok, layout.engine_root)
    image, mask, prompt = pick_example(toy=uses_toy_models(models))
    claim_weights_dir(manifest, layout)  # the tiny models are generated into it
    work = layout.first_edit_dir
    manifest.ensure_dir(work.parent)
    manifest.claim(work)
    remove_path(work)  # a rerun starts a fresh edit
    work.mkdir()
    if mask is None:
        mask = work / "mask.png"
        if image.suffix.lower() != ".png":
            raise InstallError(f"{image} has no mask file beside it ({image.stem}_mask.png)")
        write_box_mask(mask, png_size(image), DEFAULT_MASK_BOX)
    out_dir = work / "candidates"
    print(f"  editing {image.name} inside {mask.name} with the prompt {prompt!r} {note}")
    command = first_edit_command(python, image, mask, prompt, models, out_dir, extra)
    print("  " + " ".join(command))
    result = subprocess.run(command, cwd=str(layout.engine_root), env=engine_env(layout))
    if result.returncode != 0:
        print(f"The first edit failed (exit code {result.returncode}); the plugin is installed nonetheless.")
        return result.returncode
    pictures = sorted(p for p in out_dir.glob("*") if p.suffix.lower() in (".png", ".jpg"))
    print(f"\nThe first edit's candidates, made {note}.\nBest first, in {out_dir}:")
    for picture in pictures:
        print(f"  {picture}")
    return 0


# ------------------------------------------------------------------------------------------------ uninstall


ENGINE_STEP_TIMES = "step_times.json"  # engine/editing/timing.py FILE_NAME, in the per-user data folder


def uninstall(layout: Layout, keep_weights: bool = False) -> int:
    manifest = Manifest.load(layout.manifest)
    if not manifest.exists:
        print(f"Nothing to uninstall: no manifest at {layout.manifest}")
        return 0
    record = manifest.kritarc
    if record:
        restore_kritarc(record)
    kept = manifest.info.get("weights_dir") if keep_weights else None
    for key in reversed(manifest.owned):
        if key == kept:
            print(f"  kept the weights in {key} (--keep-weights)")
            continue
        remove_path(Path(key))
        print(f"  removed {key}")
    for key, backup in manifest.replaced.items():
        if Path(backup).exists():
            shutil.move(backup, key)
            print(f"  restored {key}")
    if record and record.get("backup"):
        remove_path(Path(record["backup"]))
    remove_path(layout.manifest)
    # written by the engine at run time, not by the installer: its measured step times (time estimates)
    step_times = layout.data_dir / ENGINE_STEP_TIMES
    if step_times.exists():
        remove_path(step_times)
        print(f"  removed {step_times}")
    for folder in sorted(manifest.created_dirs, key=lambda p: len(Path(p).parts), reverse=True):
        path = Path(folder)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    print("Blended Diffusion is uninstalled.")
    return 0


def restore_kritarc(record: dict) -> None:
    path = Path(record["path"])
    if not path.is_file():
        return
    current = path.read_bytes()
    if sha256_bytes(current) == record.get("written_sha256"):
        # Untouched since the install: put the exact previous bytes back (or remove the file we made).
        if record.get("existed"):
            write_atomic(path, Path(record["backup"]).read_bytes())
        else:
            path.unlink()
    else:
        text = current.decode("utf-8", errors="surrogateescape")
        restored = restore_in_kritarc(text, record.get("previous_line"), record.get("section_added", False))
        write_atomic(path, restored.encode("utf-8", errors="surrogateescape"))
    print(f"  restored the {ENABLE_KEY} line of {path}")


# ----------------------------------------------------------------------------------------------------- zip


def zip_entries() -> List[tuple]:
    """(archive name, source path or None for a folder) in the layout Krita's plugin importer reads."""
    entries: List[tuple] = [
        (f"{PLUGIN_NAME}.desktop", REPO / "krita_plugin" / f"{PLUGIN_NAME}.desktop"),
        (f"{PLUGIN_NAME}.action", REPO / "krita_plugin" / f"{PLUGIN_NAME}.action"),
    ]

    def add_tree(source: Path, prefix: str) -> None:
        # The importer finds the package by its folder entry ("name/"), so folders get entries of their own.
        entries.append((prefix + "/", None))
        for child in sorted(source.iterdir()):
            if child.name in IGNORED_NAMES or child.name.endswith(IGNORED_SUFFIXES):
                continue
            if child.is_dir():
                add_tree(child, f"{prefix}/{child.name}")
            else:
                entries.append((f"{prefix}/{child.name}", child))

    add_tree(REPO / "krita_plugin" / PLUGIN_NAME, PLUGIN_NAME)
    vendor = f"{PLUGIN_NAME}/{ZIP_VENDOR_DIR}"
    entries.append((vendor + "/", None))
    add_tree(REPO / "bridge", f"{vendor}/bridge")
    return entries


def build_zip(target: Path) -> None:
    check_sources()
    target = target.expanduser().absolute()
    if target.is_dir():
        raise InstallError(f"--zip {target} is a folder; give a file name such as blended_diffusion.zip")
    if not target.parent.is_dir():
        raise InstallError(f"--zip: the folder {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, source in zip_entries():
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                if source is None:
                    info.external_attr = (0o40755 << 16) | 0x10
                    archive.writestr(info, b"")
                else:
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, source.read_bytes())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"Wrote {target}: import it in Krita with Tools > Scripts > Import Python Plugin from File,")
    print("restart Krita, then run `python3 install.py --no-plugin` (or set the engine up by hand, see")
    print("docs/install.md) so the plugin finds an engine.")


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description=__doc__.splitlines()[0],
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


if __name__ == "__main__":
    sys.exit(main())
