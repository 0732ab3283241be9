"""A latent preset's download from a hub at a pinned revision (engine/models/hub.py), against a local
server that answers like one: ``/raw/`` gives Git LFS pointers for the weights and small files whole,
``/resolve/`` the content with Range support, only at the pinned commit. The repository's content is the
shipped toy-latent folder, so what is downloaded then loads and edits through the sd15 code path."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from engine.errors import DownloadError, InputError, WeightsCorruptError
from engine.models import hub, registry
from tests.local_http import serving

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "resources" / "models" / "toy-latent"
REPO = "owner/toy-latent"
REVISION = "0123456789abcdef0123456789abcdef01234567"
FILES = sorted(
    p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*") if p.is_file() and p.name != "preset.json"
)
UNET = "unet/diffusion_pytorch_model.safetensors"


class HubHandler(http.server.BaseHTTPRequestHandler):
    """The repository at REVISION; ``cut`` drops a resolve transfer half way once, ``corrupt`` serves
    other bytes for a path than its pointer says. Records (how, path, Range) of each request."""

    content: Dict[str, bytes] = {}
    requests: List[tuple] = []
    cut: set = set()
    corrupt: set = set()

    def do_GET(self):  # noqa: N802 - http.server's name
        parts = self.path.lstrip("/").split("/", 4)  # owner, name, how, revision, path
        if len(parts) != 5 or "/".join(parts[:2]) != REPO or parts[3] != REVISION:
            self.send_error(404)
            return
        how, path = parts[2], parts[4]
        type(self).requests.append((how, path, self.headers.get("Range")))
        data = type(self).content.get(path)
        if data is None or how not in ("raw", "resolve"):
            self.send_error(404)
            return
        if how == "raw":
            if path.endswith(".safetensors"):  # stored with Git LFS: the blob is a pointer
                data = (
                    f"{hub.LFS_POINTER_VERSION}\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                    f"size {len(data)}\n"
                ).encode()
            self._send(200, data)
            return
        if path in type(self).corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        body = data[start:]
        cut = path in type(self).cut
        type(self).cut.discard(path)
        self._send(206 if start else 200, body, body[: len(body) // 2] if cut else body, start, len(data))

    def _send(self, code: int, body: bytes, sent: Optional[bytes] = None, start: int = 0, total: int = 0):
        self.send_response(code)
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if sent is None else sent)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    HubHandler.content = {rel: (SHIPPED / rel).read_bytes() for rel in FILES}
    with serving(HubHandler) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_log():
    HubHandler.requests.clear()
    HubHandler.cut.clear()
    HubHandler.corrupt.clear()


def hub_preset(folder: Path, published: Optional[dict] = None, revision: str = REVISION) -> Path:
    """A folder preset naming the toy-latent files (no digests unless ``published``) and the hub source."""
    shipped = json.loads((SHIPPED / "preset.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "hub-toy-latent",
        "method": "latent",
        "description": "toy-latent from a hub (test)",
        "pipeline": {
            **{k: shipped["pipeline"][k] for k in ("family", "resolution", "dtype", "guidance_scale")},
            "licence": "the project's (test)",
            "source": {"repository": REPO, "revision": revision},
            "files": {rel: dict((published or {}).get(rel, {})) for rel in FILES},
        },
        "edit_defaults": {"timestep_respacing": "5", "skip_timesteps": 0, "batch_size": 1},
    }
    (folder / "preset.json").write_text(json.dumps(data))
    return folder


def test_download_states_the_size_then_resumes_and_verifies_every_file(server, tmp_path):
    folder = hub_preset(tmp_path / "m")
    preset = registry.get_preset(str(folder))
    HubHandler.cut.add(UNET)
    lines: List[str] = []
    with pytest.raises(DownloadError, match="partial file is kept"):
        hub.download_pipeline(preset, show_progress=False, base=server, log=lines.append)
    assert (folder / (UNET + ".part")).is_file() and not (folder / UNET).exists()
    size = sum(len(HubHandler.content[rel]) for rel in FILES)
    assert f"{size / 1e9:.2f} GB" in lines[0] and "licence: the project's (test)" in lines[0]
    assert REVISION in lines[0] and f"{len(FILES)} of {len(FILES)} files" in lines[0]
    first_resolve = next(i for i, r in enumerate(HubHandler.requests) if r[0] == "resolve")
    assert {r[1] for r in HubHandler.requests[:first_resolve]} == set(FILES)  # every size known first

    HubHandler.requests.clear()
    paths = hub.download_pipeline(preset, show_progress=False, base=server, log=lines.append)
    unet_requests = [r for r in HubHandler.requests if r[1] == UNET and r[0] == "resolve"]
    half = len(HubHandler.content[UNET]) // 2
    assert unet_requests == [("resolve", UNET, f"bytes={half}-")]  # resumed, not started again
    assert sorted(p.relative_to(folder).as_posix() for p in paths) == FILES
    for rel in FILES:
        data = (folder / rel).read_bytes()
        assert data == HubHandler.content[rel]
        recorded = (folder / (rel + ".sha256")).read_text().split()[0]
        assert recorded == hashlib.sha256(data).hexdigest()  # later loads verify against it
    assert not list(folder.rglob("*.part"))
    HubHandler.requests.clear()
    hub.download_pipeline(preset, show_progress=False, base=server, log=lines.append)
    assert f"0 of {len(FILES)} files" in lines[-1] and not HubHandler.requests  # a third run only checks

    from engine.models.loading import load_models

    models = load_models(str(folder), device="cpu")
    assert models.method == "latent" and models.image_size == 32


def test_a_file_that_does_not_match_its_pointer_is_refused_and_not_placed(server, tmp_path):
    folder = hub_preset(tmp_path / "m")
    HubHandler.corrupt.add("vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsCorruptError, match="not the published digest"):
        hub.download_pipeline(registry.get_preset(str(folder)), show_progress=False, base=server, log=print)
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    assert not vae.exists() and not Path(str(vae) + ".part").exists()


def test_a_published_digest_the_hub_contradicts_stops_before_any_download(server, tmp_path):
    folder = hub_preset(tmp_path / "m", published={UNET: {"sha256": "0" * 64}})
    with pytest.raises(WeightsCorruptError, match="nothing was downloaded"):
        hub.download_pipeline(registry.get_preset(str(folder)), show_progress=False, base=server, log=print)
    assert not any(how == "resolve" for how, _, _ in HubHandler.requests)
    assert not (folder / "unet").exists()


def test_a_file_placed_by_hand_is_checked_against_the_hub_not_fetched(server, tmp_path):
    folder = hub_preset(tmp_path / "m")
    (folder / "unet").mkdir()
    shutil.copy(SHIPPED / UNET, folder / UNET)
    hub.download_pipeline(registry.get_preset(str(folder)), show_progress=False, base=server, log=print)
    assert ("resolve", UNET, None) not in HubHandler.requests
    assert (folder / (UNET + ".sha256")).is_file()


def test_the_cli_downloads_from_hf_endpoint_and_an_unknown_revision_is_a_clear_error(server, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": server}
    command = [sys.executable, "-m", "engine", "download", "--no-progress"]
    wrong = hub_preset(tmp_path / "wrong", revision="f" * 40)
    result = subprocess.run(command + [str(wrong)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 1 and "HTTP 404" in result.stderr and "f" * 40 in result.stderr
    assert not (wrong / "unet").exists()
    good = hub_preset(tmp_path / "good")
    result = subprocess.run(command + [str(good)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert "is ready" in result.stdout and (good / UNET).is_file()


@pytest.mark.parametrize(
    "source,message",
    [
        ({"repository": REPO, "revision": "main"}, "must pin a commit"),
        ({"repository": "no-owner", "revision": REVISION}, "owner/name"),
        ({"repository": "a/../b", "revision": REVISION}, "owner/name"),
        ("owner/name", "must be an object"),
    ],
)
def test_a_source_must_pin_a_commit_of_a_named_repository(tmp_path, source, message):
    folder = hub_preset(tmp_path / "m")
    data = json.loads((folder / "preset.json").read_text())
    data["pipeline"]["source"] = source
    (folder / "preset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        registry.get_preset(str(folder))


@pytest.mark.parametrize("name", ["sd15", "sd21-base", "sdxl"])
def test_the_stable_diffusion_presets_pin_their_repositories(name):
    pipeline = registry.get_preset(name).pipeline
    assert pipeline.source is not None and len(pipeline.source.revision) == 40
    assert all(spec.source_path and spec.file == f"{name}/{spec.source_path}" for spec in pipeline.files)
    weights = [s for s in pipeline.files if s.file.endswith(".safetensors")]
    assert weights and all(".fp16." in s.file for s in weights)  # the half-size variant, as offered
