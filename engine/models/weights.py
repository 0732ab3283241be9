"""Weight files: verification (SHA-256), status for listing, and downloads with progress and resume.

Nothing here runs at import time, and nothing downloads unless ``download()`` is called (the
``python -m engine download`` command). Standard library only (tqdm is imported when a bar is shown),
so listing presets does not import torch.

Digests: a spec's published ``sha256``; for models without one (generated ``tiny`` files, or a model
marked ``trust_on_first_use``) the digest recorded in ``<file>.sha256`` beside the file when it was
written. Hashing a 2 GB file takes seconds, so a successful check of a large file is remembered in
``<file>.verified`` (digest, size, mtime) and redone only when the file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from engine.errors import DownloadError, WeightsCorruptError, WeightsMissingError
from engine.models.registry import ModelSpec, Preset

CHUNK = 1 << 20
CACHE_MIN_BYTES = 64 << 20  # only remember checks of files big enough for hashing to be slow
USER_AGENT = "blended-diffusion-krita/0.1 (weights downloader)"
PathLike = Union[str, os.PathLike, None]


def sha256_file(path: Path, progress: Optional[Callable[[int], None]] = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verified_cache_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_recorded_sha256(path: Path) -> Optional[str]:
    try:
        value = record_path(path).read_text(encoding="utf-8").split()[0].strip().lower()
    except (OSError, IndexError):
        return None
    return value if len(value) == 64 else None


def record_sha256(path: Path, sha256: str) -> None:
    write_text_atomic(record_path(path), f"{sha256}  {path.name}\n")


def expected_sha256(spec: ModelSpec, path: Path) -> Optional[str]:
    return spec.sha256 or read_recorded_sha256(path)


def where_to_get(spec: ModelSpec, preset_name: Optional[str] = None) -> str:
    command = f"python -m engine download {preset_name}" if preset_name else "python -m engine download"
    if spec.generated:
        return "it is generated locally (seeded random weights) when the preset is first loaded"
    if spec.urls:
        return f"{spec.urls[0]} (or run `{command}`)" + (
            f"; mirrors: {', '.join(spec.urls[1:])}" if len(spec.urls) > 1 else ""
        )
    return "the place the preset's author names (no download URL is recorded)"


def describe(spec: ModelSpec, path: Path, preset_name: Optional[str] = None) -> str:
    sha = expected_sha256(spec, path) or "(not published; recorded at first download)"
    return (
        f"  file: {path.name}\n  folder: {path.parent}\n  expected SHA-256: {sha}\n"
        f"  get it from: {where_to_get(spec, preset_name)}"
    )


def _cached_ok(path: Path, sha: str, stat: os.stat_result) -> bool:
    try:
        cached = json.loads(verified_cache_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return cached == {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _remember_ok(path: Path, sha: str) -> None:
    stat = path.stat()
    if stat.st_size < CACHE_MIN_BYTES:
        return
    try:
        write_text_atomic(
            verified_cache_path(path),
            json.dumps({"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}),
        )
    except OSError:
        pass  # a read-only folder only costs a re-hash next time


@dataclass
class FileStatus:
    spec: ModelSpec
    path: Path
    # "ok", "missing", "partial", "truncated", "corrupt", "unrecorded" (no digest to check),
    # "unchecked" (present, right size, not hashed: check_file(hash_file=False))
    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check_file(spec: ModelSpec, weights_dir: PathLike = None, hash_file: bool = True) -> FileStatus:
    """The state of one model's file, without raising."""
    path = spec.path(weights_dir)
    if not path.is_file():
        if part_path(path).is_file():
            size = part_path(path).stat().st_size
            return FileStatus(spec, path, "partial", f"{size} bytes downloaded; `download` resumes it")
        return FileStatus(spec, path, "missing")
    stat = path.stat()
    if spec.size_bytes and stat.st_size != spec.size_bytes:
        state = "truncated" if stat.st_size < spec.size_bytes else "corrupt"
        return FileStatus(spec, path, state, f"{stat.st_size} bytes, expected {spec.size_bytes}")
    sha = expected_sha256(spec, path)
    if sha is None:
        return FileStatus(spec, path, "unrecorded", "no SHA-256 to check it against")
    if _cached_ok(path, sha, stat):
        return FileStatus(spec, path, "ok")
    if not hash_file:
        return FileStatus(spec, path, "unchecked", "SHA-256 not checked")
    actual = sha256_file(path)
    if actual != sha:
        return FileStatus(spec, path, "corrupt", f"SHA-256 is {actual}")
    _remember_ok(path, sha)
    return FileStatus(spec, path, "ok")


def verify(spec: ModelSpec, weights_dir: PathLike = None, preset_name: Optional[str] = None) -> Path:
    """The file's path if present and matching its SHA-256; otherwise a clear error."""
    status = check_file(spec, weights_dir)
    path = status.path
    if status.state in ("missing", "partial"):
        extra = f" (a partial download is there: {status.detail})" if status.state == "partial" else ""
        raise WeightsMissingError(f"Model weights not found{extra}:\n{describe(spec, path, preset_name)}")
    if status.state == "unrecorded":
        raise WeightsCorruptError(
            f"Model weights have no recorded SHA-256 ({record_path(path).name} is missing), so they cannot "
            "be verified; delete the file and download or generate it again:\n"
            f"{describe(spec, path, preset_name)}"
        )
    if not status.ok:
        again = "generated again on the next load" if spec.generated else "downloaded again"
        raise WeightsCorruptError(
            f"Model weights are {status.state} ({status.detail}); delete the file to have it {again}:\n"
            f"{describe(spec, path, preset_name)}"
        )
    return path


def preset_status(preset: Preset, weights_dir: PathLike = None, hash_file: bool = True) -> list[FileStatus]:
    return [check_file(spec, weights_dir, hash_file) for spec in preset.models]


# ---- download -----------------------------------------------------------------------------------------


def _progress_bar(total: Optional[int], initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def _fetch(url: str, part: Path, show_progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # nothing left to fetch: the part is complete (the digest check decides)
        raise
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = _progress_bar(total, have, part.name[: -len(".part")], show_progress)
        try:
            with open(part, "ab" if have else "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and part.stat().st_size < total:
        raise DownloadError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download(
    spec: ModelSpec,
    weights_dir: PathLike = None,
    show_progress: bool = True,
    timeout: float = 60.0,
    preset_name: Optional[str] = None,
) -> Path:
    """Make sure ``spec``'s file is present and valid, downloading it if needed.

    A partial ``<file>.part`` is resumed; the finished file is checked against its SHA-256 before it is
    renamed into place, so a bad download never replaces anything.
    """
    path = spec.path(weights_dir)
    status = check_file(spec, weights_dir)
    if status.ok:
        return path
    if spec.generated:
        raise DownloadError(
            f"{path.name} is not downloaded: it is generated locally when the preset is loaded "
            f"(delete it to have it made again).\n{describe(spec, path, preset_name)}"
        )
    if status.state not in ("missing", "partial"):
        raise WeightsCorruptError(
            f"Model weights are {status.state} ({status.detail}); delete the file and download it again:\n"
            f"{describe(spec, path, preset_name)}"
        )
    if not spec.urls:
        raise DownloadError(
            f"No download URL is recorded for this model:\n{describe(spec, path, preset_name)}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create the weights folder {path.parent}: {exc}") from exc
    part = part_path(path)
    errors = []
    for url in spec.urls:
        try:
            _fetch(url, part, show_progress, timeout)
        except (OSError, urllib.error.URLError, DownloadError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue  # keep the part: the next mirror resumes it (same file, same digest)
        if spec.size_bytes and part.stat().st_size != spec.size_bytes:
            errors.append(f"{url}: got {part.stat().st_size} bytes, expected {spec.size_bytes}")
            part.unlink()
            continue
        actual = sha256_file(part)
        expected = spec.sha256
        if spec.sha256_prefix and not actual.startswith(spec.sha256_prefix):
            # a trust-on-first-use file must still carry the digest its name promises
            part.unlink()
            raise WeightsCorruptError(
                f"The download from {url} has SHA-256 {actual}, which does not start with "
                f"{spec.sha256_prefix} as the file name says; it was deleted.\n"
                f"{describe(spec, path, preset_name)}"
            )
        if expected is not None and actual != expected:
            part.unlink()
            raise WeightsCorruptError(
                f"The download from {url} has SHA-256 {actual}, not the published digest; it was deleted.\n"
                f"{describe(spec, path, preset_name)}"
            )
        os.replace(part, path)
        if expected is None:
            record_sha256(path, actual)  # trust on first use
        _remember_ok(path, actual)
        return path
    kept = " (the partial file is kept and resumed next time)" if part.exists() else ""
    raise DownloadError(
        f"Download failed{kept}:\n  " + "\n  ".join(errors) + f"\n{describe(spec, path, preset_name)}"
    )


def download_preset(
    preset: Preset, weights_dir: PathLike = None, show_progress: bool = True, timeout: float = 60.0
) -> list[Path]:
    return [
        download(spec, weights_dir, show_progress, timeout, preset.name)
        for spec in preset.models
        if not spec.generated
    ]
