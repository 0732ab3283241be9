"""Weights manager on local files and a local HTTP server (no network): good, truncated, corrupt,
resumed downloads, clear errors; the tiny preset's generated files and their recorded digests."""

from __future__ import annotations

import hashlib
import http.server
from pathlib import Path

import pytest

from engine.errors import DownloadError, WeightsCorruptError, WeightsMissingError
from engine.models import weights
from engine.models.registry import ModelSpec, get_preset
from tests.local_http import serving

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /model.pt with Range support; /cut.pt stops after half; /norange.pt ignores
    Range; anything else is 404. Records the Range headers it saw."""

    ranges: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).ranges.append(self.headers.get("Range"))
        if self.path not in ("/model.pt", "/cut.pt", "/norange.pt"):
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.path != "/norange.pt":
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut.pt":
            body = body[: len(body) // 2]  # the connection drops half way
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    with serving(RangeHandler) as url:
        yield url


def spec_for(urls: list[str], sha: str = PAYLOAD_SHA, size: int | None = None) -> ModelSpec:
    return ModelSpec(
        name="test",
        kind="diffusion",
        file="model.pt",
        sha256=sha,
        urls=urls,
        size_bytes=size,
        model_flags={"image_size": 32},
    )


def test_good_file_verifies_and_missing_file_error_says_everything(weights_dir):
    spec = spec_for(["https://example.invalid/model.pt"])
    with pytest.raises(WeightsMissingError) as info:
        weights.verify(spec, weights_dir, "default")
    message = str(info.value)
    for needed in (
        "model.pt",
        str(weights_dir),
        PAYLOAD_SHA,
        "https://example.invalid/model.pt",
        "python -m engine download default",
    ):
        assert needed in message
    (weights_dir / "model.pt").write_bytes(PAYLOAD)
    assert weights.verify(spec, weights_dir) == weights_dir / "model.pt"


def test_truncated_and_corrupt_files_are_refused(weights_dir):
    path = weights_dir / "model.pt"
    path.write_bytes(PAYLOAD[:1000])
    with pytest.raises(WeightsCorruptError, match="truncated") as info:
        weights.verify(spec_for([], size=len(PAYLOAD)), weights_dir)
    assert PAYLOAD_SHA in str(info.value) and str(weights_dir) in str(info.value)
    with pytest.raises(WeightsCorruptError, match="corrupt"):  # no size recorded: the digest catches it
        weights.verify(spec_for([]), weights_dir)
    path.write_bytes(PAYLOAD[:-1] + b"\x00")
    status = weights.check_file(spec_for([]), weights_dir)
    assert status.state == "corrupt" and "SHA-256 is" in status.detail
    # download never overwrites a bad file silently
    with pytest.raises(WeightsCorruptError, match="delete the file"):
        weights.download(spec_for(["http://127.0.0.1:9/model.pt"]), weights_dir, show_progress=False)
    assert path.read_bytes() == PAYLOAD[:-1] + b"\x00"


def test_download_verifies_and_remembers(server, weights_dir, monkeypatch):
    monkeypatch.setattr(weights, "CACHE_MIN_BYTES", 0)
    spec = spec_for([f"{server}/missing.pt", f"{server}/model.pt"])  # first mirror fails, second works
    path = weights.download(spec, weights_dir, show_progress=True)
    assert path.read_bytes() == PAYLOAD
    assert not weights.part_path(path).exists()
    assert weights.verified_cache_path(path).exists()
    # the remembered check skips hashing until the file changes
    monkeypatch.setattr(weights, "sha256_file", lambda *_: pytest.fail("hashed again"))
    assert weights.check_file(spec, weights_dir).ok


def test_interrupted_download_resumes_with_range(server, weights_dir):
    RangeHandler.ranges.clear()
    cut = spec_for([f"{server}/cut.pt"])
    with pytest.raises(DownloadError) as info:
        weights.download(cut, weights_dir, show_progress=False)
    assert "cut.pt" in str(info.value) and "partial file is kept" in str(info.value)
    part = weights.part_path(weights_dir / "model.pt")
    assert part.stat().st_size == len(PAYLOAD) // 2
    assert weights.check_file(cut, weights_dir).state == "partial"
    path = weights.download(spec_for([f"{server}/model.pt"]), weights_dir, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert RangeHandler.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_ignoring_range_restarts_cleanly(server, weights_dir):
    part = weights.part_path(weights_dir / "model.pt")
    part.write_bytes(b"x" * 1000)  # stale partial data
    path = weights.download(spec_for([f"{server}/norange.pt"]), weights_dir, show_progress=False)
    assert path.read_bytes() == PAYLOAD


def test_download_with_wrong_digest_keeps_nothing(server, weights_dir):
    spec = spec_for([f"{server}/model.pt"], sha="0" * 64)
    with pytest.raises(WeightsCorruptError, match="not the published digest"):
        weights.download(spec, weights_dir, show_progress=False)
    assert list(weights_dir.iterdir()) == []


def test_trust_on_first_use_records_the_digest(server, weights_dir):
    spec = spec_for([f"{server}/model.pt"], sha=None)
    spec.trust_on_first_use = True
    path = weights.download(spec, weights_dir, show_progress=False)
    assert weights.read_recorded_sha256(path) == PAYLOAD_SHA
    path.write_bytes(PAYLOAD[:10])
    with pytest.raises(WeightsCorruptError):
        weights.verify(spec, weights_dir)


def test_trust_on_first_use_download_must_match_the_sha256_prefix(server, weights_dir):
    spec = spec_for([f"{server}/model.pt"], sha=None)
    spec.trust_on_first_use = True
    spec.sha256_prefix = "0" * 8 if not PAYLOAD_SHA.startswith("0" * 8) else "f" * 8
    with pytest.raises(WeightsCorruptError, match=f"does not start with {spec.sha256_prefix}"):
        weights.download(spec, weights_dir, show_progress=False)
    assert list(weights_dir.iterdir()) == []  # nothing recorded, nothing kept
    spec.sha256_prefix = PAYLOAD_SHA[:8]
    path = weights.download(spec, weights_dir, show_progress=False)
    assert weights.read_recorded_sha256(path) == PAYLOAD_SHA


def test_tiny_files_are_generated_deterministically_and_verified(tmp_path, tiny_models):
    from engine.models.loading import load_models

    first = tiny_models.files
    again = load_models("tiny", weights_dir=tmp_path, device="cpu").files
    for kind in ("diffusion", "clip"):
        assert weights.read_recorded_sha256(again[kind]) == weights.read_recorded_sha256(first[kind])
        assert weights.sha256_file(again[kind]) == weights.read_recorded_sha256(again[kind])
    # a damaged generated file is reported, not silently used or replaced
    clip_file: Path = again["clip"]
    data = bytearray(clip_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    clip_file.write_bytes(bytes(data))
    with pytest.raises(WeightsCorruptError) as info:
        load_models("tiny", weights_dir=tmp_path, device="cpu")
    assert "tiny_clip.pt" in str(info.value) and "generated locally" in str(info.value)


def test_preset_download_skips_generated_models(weights_dir):
    assert weights.download_preset(get_preset("tiny"), weights_dir, show_progress=False) == []
    with pytest.raises(DownloadError, match="generated locally"):
        weights.download(get_preset("tiny").diffusion, weights_dir, show_progress=False)
