"""Where torch comes from: the build (CPU, CUDA, default), its package index, whether that index answers
(probed the way pip would reach it), and what installing PyPI's torch instead means."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from installer.layout import is_windows

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128"
# How long to wait for the torch index before installing PyPI's torch instead: a proxy that drops the
# connection would otherwise hold pip for its timeout (default 15 s) times its retries (5).
INDEX_PROBE_TIMEOUT = 15.0


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
    if variant == "cuda" and is_windows(platform):
        return TORCH_CUDA_INDEX_WINDOWS
    return None


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
    elif is_windows(platform):
        meaning = (
            f"On Windows {source}'s torch is the CPU build: the engine runs on the CPU; for an NVIDIA GPU "
            "install torch from a CUDA index later (docs/install.md)."
        )
    else:
        meaning = f"{source}'s torch for this system is its default build (CPU, and MPS on Apple silicon)."
    return f"installing torch from {source} instead. {meaning}"
