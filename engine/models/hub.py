"""A latent preset's diffusers files from a model hub, at the preset's pinned revision (issue 31).

``download_pipeline(preset, weights_dir)`` is what ``python -m engine download sd15`` runs. For each file
the preset needs (only those: the fp16 variant where the preset names it):

1. Its expected SHA-256 and size, before anything is downloaded: the digest the preset publishes, else the
   repository's own record at the pinned commit. ``{endpoint}/{repo}/raw/{revision}/{path}`` is the Git
   blob: for a large file its Git LFS pointer (``oid sha256:<hex>`` and ``size <bytes>``), which the commit
   hash covers, so the digest is as fixed as the revision; for a small file (configs, tokenizer) the blob
   is the file itself, kept as fetched. A published digest that disagrees with the pointer stops the
   download before it starts.
2. The total size and the licence are printed, then each large file is fetched from
   ``{endpoint}/{repo}/resolve/{revision}/{path}`` by ``weights.download``: resumed from its ``.part``
   with an HTTP Range request, checked against its digest before it is renamed into place.
3. Each file's digest is recorded beside it (``<file>.sha256``), so every later load verifies it.

The endpoint is ``$HF_ENDPOINT`` (the variable huggingface_hub reads; a mirror, or a local server in the
tests), else https://huggingface.co. Standard library only; nothing runs at import time.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from engine.errors import DownloadError, WeightsCorruptError
from engine.models import weights
from engine.models.registry import HubSource, ModelSpec, Preset, pipeline_root

ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
LFS_POINTER_VERSION = "version https://git-lfs.github.com/spec/v1"
MAX_BLOB_BYTES = 16 << 20  # a Git blob read whole (configs, vocabularies); model weights are LFS files


@dataclass
class PlannedFile:
    spec: ModelSpec  # with the expected ``sha256``, ``size_bytes`` and the resolve URL filled in
    content: Optional[bytes] = None  # a small file: the blob itself, already fetched
    present: bool = False  # already in place and verified: nothing to fetch


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def file_url(base: str, source: HubSource, how: str, path: str) -> str:
    """``how``: "resolve" (the file's content, LFS resolved) or "raw" (the Git blob: an LFS pointer)."""
    return f"{base}/{source.repository}/{how}/{source.revision}/{path}"


def parse_lfs_pointer(blob: bytes) -> Optional[Tuple[str, int]]:
    """(sha256, size) of a Git LFS pointer file; None when the blob is not one."""
    if not blob.startswith(LFS_POINTER_VERSION.encode()) or len(blob) > 1024:
        return None
    fields = dict(line.split(" ", 1) for line in blob.decode("ascii", "replace").splitlines() if " " in line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or len(oid) != 71 or not size.isdigit():
        raise DownloadError(f"a malformed Git LFS pointer: {blob[:200]!r}")
    return oid[len("sha256:") :].lower(), int(size)


def _read_blob(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": weights.USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            blob = response.read(MAX_BLOB_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the hub answered HTTP {exc.code} {exc.reason}") from None
    except (OSError, urllib.error.URLError) as exc:
        raise DownloadError(f"{url}: {exc}") from None
    if len(blob) > MAX_BLOB_BYTES:
        raise DownloadError(f"{url}: more than {MAX_BLOB_BYTES} bytes and not a Git LFS pointer")
    return blob


def plan(
    preset: Preset, weights_dir: weights.PathLike = None, base: Optional[str] = None, timeout: float = 60.0
) -> List[PlannedFile]:
    """Every file of the preset's pipeline with its expected digest and size; fetches only pointers and
    small files. Raises before any large download when the hub and the preset disagree."""
    pipeline = preset.pipeline
    if pipeline is None or pipeline.source is None:
        raise DownloadError(f"preset {preset.name!r} names no hub repository to download from")
    base = base or endpoint()
    planned = []
    for spec in pipeline.files:
        assert spec.source_path is not None
        status = weights.check_file(spec, weights_dir, hash_file=True)
        if status.ok:
            planned.append(PlannedFile(spec, present=True))
            continue
        blob = _read_blob(file_url(base, pipeline.source, "raw", spec.source_path), timeout)
        pointer = parse_lfs_pointer(blob)
        sha, size = pointer if pointer else (hashlib.sha256(blob).hexdigest(), len(blob))
        for published, hub_value, what in ((spec.sha256, sha, "SHA-256"), (spec.size_bytes, size, "size")):
            if published is not None and published != hub_value:
                raise WeightsCorruptError(
                    f"{pipeline.source.repository} at {pipeline.source.revision} has {spec.source_path} with "
                    f"{what} {hub_value}, but the preset publishes {published}; nothing was downloaded"
                )
        url = file_url(base, pipeline.source, "resolve", spec.source_path)
        resolved = replace(spec, sha256=sha, size_bytes=size, urls=[url], trust_on_first_use=False)
        planned.append(PlannedFile(resolved, content=None if pointer else blob))
    return planned


def _install_blob(item: PlannedFile, weights_dir: weights.PathLike) -> Path:
    """A small file fetched whole: written beside, then renamed into place (never half-written)."""
    path = item.spec.path(weights_dir)
    if path.is_file() and weights.sha256_file(path) == item.spec.sha256:
        return path  # placed by hand, and the same file
    if path.exists():
        raise WeightsCorruptError(
            f"{path} differs from the hub's file at the pinned revision; delete it and download again"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = weights.part_path(path)
    assert item.content is not None
    part.write_bytes(item.content)
    os.replace(part, path)
    return path


def download_pipeline(
    preset: Preset,
    weights_dir: weights.PathLike = None,
    show_progress: bool = True,
    timeout: float = 60.0,
    base: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> List[Path]:
    """Fetch and verify the preset's files from its pinned hub revision; returns their paths."""
    planned = plan(preset, weights_dir, base, timeout)
    pipeline = preset.pipeline
    assert pipeline is not None and pipeline.source is not None
    needed = [item for item in planned if not item.present]
    total = sum(item.spec.size_bytes or 0 for item in needed)
    log(
        f"{preset.name}: {pipeline.source.repository} at revision {pipeline.source.revision} into "
        f"{pipeline_root(preset, weights_dir)}: {len(needed)} of {len(planned)} files to fetch, "
        f"{total / 1e9:.2f} GB; licence: {pipeline.licence or 'see the repository'}"
    )
    paths = []
    for item in planned:
        path = item.spec.path(weights_dir)
        if not item.present:
            if item.content is not None:
                _install_blob(item, weights_dir)
            else:
                weights.download(item.spec, weights_dir, show_progress, timeout, preset.name)
            assert item.spec.sha256 is not None
            weights.record_sha256(path, item.spec.sha256)  # what every later load checks the file against
        paths.append(path)
    return paths
