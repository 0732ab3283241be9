"""Model specs and presets, read from the data files in ``engine/models/``, and the weights folder.

- ``engine/models/specs/<model>.json``: one model: ``kind`` ("diffusion" or "clip"), ``file``, ``sha256``,
  ``size_bytes``, ``urls``, and the architecture (``model_flags`` + ``diffusion_flags`` for diffusion,
  ``config`` for CLIP). ``generate: {"seed": N}`` marks a model made locally with seeded random weights
  (``tiny``): its SHA-256 is recorded beside the file when it is first written.
  ``kind: "lpips_backbone"``: the ImageNet backbone LPIPS needs (``config: {"net": "vgg"}``); optional
  ``sha256_prefix``: leading hex digits the digest must have (torchvision names its files by them), checked
  against ``sha256`` here and against a trust-on-first-use download in ``weights.download``.
- ``engine/models/presets/<preset>.json``: ``description``, ``diffusion`` and ``clip`` (a model name
  from ``specs/`` or an inline model dict), optional ``lpips`` (an ``lpips_backbone`` model: an extra file
  only the Algorithm 1 baseline / background preservation loss needs; ``download`` fetches it too, the
  preset is ready without it), optional ``directory`` (relative to the repository, e.g.
  ``resources/models/toy``) holding the files instead of the weights folder, optional ``edit_defaults``:
  recommended edit settings (``EditParams`` field names, e.g. a short schedule for small models) that
  ``python -m engine edit`` and the server use for options the user did not set.
- ``"method": "latent"`` presets have a ``pipeline`` instead (engine/models/latent.py): the files of a
  diffusers folder, and optionally ``source: {"repository": "owner/name", "revision": <commit>}``, the hub
  repository ``python -m engine download`` fetches them from (engine/models/hub.py).
- ``--models FOLDER``: a folder with a ``preset.json`` of the same form; its files live in that folder
  unless the preset names another ``directory`` (relative to the folder).

Standard library only, so ``python -m engine models`` lists presets without importing torch.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from engine.errors import InputError, UnknownPresetError

MODELS_DIR = Path(__file__).resolve().parent / "specs"
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_ENV = "BLENDED_DIFFUSION_WEIGHTS"
APP_NAME = "blended-diffusion"
MODEL_KINDS = ("diffusion", "clip")  # the files every preset needs
OPTIONAL_KINDS = {"lpips": "lpips_backbone"}  # preset key -> model kind of its optional extra file
PIPELINE_FILE = "pipeline_file"  # one file of a latent preset's diffusers folder (unet/..., vae/...)
ALL_KINDS = (*MODEL_KINDS, *OPTIONAL_KINDS.values(), PIPELINE_FILE)
METHODS = ("paper", "latent")  # engine/editing/paper/blended.py; engine/editing/latent/blended_latent.py
PIPELINE_FAMILIES = ("sd", "sdxl")  # one text encoder (SD 1.x/2.x), two (SDXL)
PIPELINE_DTYPES = ("auto", "fp32", "fp16", "bf16")
# the sampler a latent preset's loop steps with: DDIM (the authors' own), or the few-step LCM scheduler of a
# latent consistency model (issue 38); the folder's scheduler_config.json gives its betas either way
PIPELINE_SCHEDULERS = ("ddim", "lcm")


def user_data_dir() -> Path:
    """This project's per-user data folder (weights, logs) on this OS."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_NAME


def default_weights_dir() -> Path:
    """``$BLENDED_DIFFUSION_WEIGHTS``, else the per-user data folder of this OS."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "weights"


def resolve_weights_dir(weights_dir: Union[str, os.PathLike, None] = None) -> Path:
    return Path(weights_dir).expanduser() if weights_dir else default_weights_dir()


@dataclass
class ModelSpec:
    name: str
    kind: str  # "diffusion", "clip" or "lpips_backbone"
    file: str
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    urls: list = field(default_factory=list)
    description: str = ""
    model_flags: dict = field(default_factory=dict)  # diffusion: guided-diffusion model flags
    diffusion_flags: dict = field(default_factory=dict)  # diffusion: schedule flags
    config: dict = field(default_factory=dict)  # clip: open_clip CLIP config; lpips_backbone: {"net": ...}
    generate: Optional[dict] = None  # {"seed": N}: seeded random weights made locally
    trust_on_first_use: bool = False  # no published SHA-256: the first download's digest is recorded
    sha256_prefix: Optional[str] = None  # leading hex digits the digest must have (e.g. from the file name)
    directory: Optional[Path] = None  # set from the preset: where the file lives instead of the weights dir
    source_path: Optional[str] = None  # a pipeline file: its path in the preset's hub repository

    @property
    def generated(self) -> bool:
        return self.generate is not None

    @property
    def records_sha256(self) -> bool:
        """True when the digest is kept in a ``<file>.sha256`` file beside the weights, not in the spec."""
        return self.sha256 is None

    def path(self, weights_dir: Union[str, os.PathLike, None] = None) -> Path:
        folder = self.directory if self.directory is not None else resolve_weights_dir(weights_dir)
        return folder / self.file

    @classmethod
    def from_dict(cls, name: str, data: dict, source: str) -> ModelSpec:
        if not isinstance(data, dict):
            raise InputError(f"{source}: a model must be a JSON object")
        kind = data.get("kind")
        if kind not in ALL_KINDS:
            raise InputError(f"{source}: model 'kind' must be one of {ALL_KINDS}, got {kind!r}")
        file_name = data.get("file")
        if kind == PIPELINE_FILE:
            # a path inside the diffusers folder: relative, forward slashes, never leaving it
            parts = file_name.split("/") if isinstance(file_name, str) else []
            if not parts or any(p in ("", ".", "..") or "\\" in p for p in parts):
                raise InputError(
                    f"{source}: 'file' must be a relative path inside the folder, got {file_name!r}"
                )
        elif not isinstance(file_name, str) or not file_name or Path(file_name).name != file_name:
            raise InputError(f"{source}: 'file' must be a plain file name, got {file_name!r}")
        sha = data.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise InputError(f"{source}: 'sha256' must be 64 hex digits")
        prefix = data.get("sha256_prefix")
        if prefix is not None:
            if not isinstance(prefix, str) or not 1 <= len(prefix) <= 64 or not _is_hex(prefix):
                raise InputError(f"{source}: 'sha256_prefix' must be 1 to 64 hex digits")
            prefix = prefix.lower()
            if sha is not None and not sha.lower().startswith(prefix):
                raise InputError(f"{source}: 'sha256' does not start with its 'sha256_prefix' {prefix}")
        if sha is None and data.get("generate") is None and not data.get("trust_on_first_use"):
            raise InputError(
                f"{source}: a downloaded model needs its 'sha256' (or 'trust_on_first_use': true)"
            )
        if kind == "diffusion" and not data.get("model_flags"):
            raise InputError(f"{source}: a diffusion model needs 'model_flags'")
        if kind == "clip" and not data.get("config"):
            raise InputError(f"{source}: a CLIP model needs 'config' (embed_dim, vision_cfg, text_cfg)")
        if kind == "lpips_backbone" and (data.get("config") or {}).get("net") != "vgg":
            raise InputError(f'{source}: an LPIPS backbone needs \'config\': {{"net": "vgg"}} (only VGG16)')
        return cls(
            name=name,
            kind=kind,
            file=file_name,
            sha256=sha.lower() if sha else None,
            size_bytes=data.get("size_bytes"),
            urls=list(data.get("urls") or []),
            description=data.get("description", ""),
            model_flags=dict(data.get("model_flags") or {}),
            diffusion_flags=dict(data.get("diffusion_flags") or {}),
            config=dict(data.get("config") or {}),
            generate=data.get("generate"),
            trust_on_first_use=bool(data.get("trust_on_first_use", False)),
            sha256_prefix=prefix,
        )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _is_repo_part(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in text)


@dataclass
class Pipeline:
    """A latent preset's diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) and how to
    run it: ``from_pretrained(root)`` of each part."""

    family: str  # "sd" (SD 1.x / 2.x: one CLIP text encoder) or "sdxl" (two, plus size conditioning)
    resolution: int  # the side the model was trained at, in pixels
    dtype: str  # weights on a GPU: "auto" (the device's half type), "fp16", "bf16" or "fp32"
    guidance_scale: float  # classifier-free guidance when the edit does not set it
    root: Path  # the folder itself
    files: list = field(default_factory=list)  # ModelSpec of each file it needs, verified before loading
    licence: str = ""
    source: Optional[HubSource] = None  # where ``python -m engine download`` fetches the files; None: by hand
    scheduler: str = "ddim"  # PIPELINE_SCHEDULERS
    # issue 38: the steps a run keeps at any strength. A few-step model has only as many chances to blend
    # as it runs steps, so at low strength the schedule grows (latent/edit.py's schedule); 0: no floor
    min_steps: int = 0


@dataclass(frozen=True)
class HubSource:
    """A model repository on a Hugging Face-style hub, pinned to one commit."""

    repository: str  # "owner/name"
    revision: str  # a full 40-hex-digit commit: the files, and so their digests, never change under it

    @classmethod
    def from_dict(cls, data: object, source: Path) -> HubSource:
        if not isinstance(data, dict):
            raise InputError(
                f"{source}: pipeline 'source' must be an object with 'repository' and 'revision'"
            )
        repository, revision = data.get("repository"), data.get("revision")
        parts = repository.split("/") if isinstance(repository, str) else []
        if len(parts) != 2 or not all(p and p not in (".", "..") and _is_repo_part(p) for p in parts):
            raise InputError(
                f"{source}: pipeline source 'repository' must be 'owner/name', got {repository!r}"
            )
        if not isinstance(revision, str) or len(revision) != 40 or not _is_hex(revision):
            raise InputError(
                f"{source}: pipeline source 'revision' must pin a commit (40 hex digits), got {revision!r}"
            )
        return cls(repository, revision.lower())


Method = Literal["paper", "latent"]  # which editing loop a preset's models run (engine/editing)


@dataclass
class Preset:
    name: str
    description: str
    diffusion: Optional[ModelSpec]  # None for a latent preset (its files are ``pipeline.files``)
    clip: Optional[ModelSpec]  # the ranking CLIP (a latent preset may have none: unranked candidates)
    source: Path  # the preset data file
    # Recommended EditParams values for these models (e.g. a short schedule); options the user sets win.
    edit_defaults: dict = field(default_factory=dict)
    # LPIPS backbone: an optional extra file, only for Algorithm 1 / the background preservation loss
    lpips: Optional[ModelSpec] = None
    method: Method = "paper"  # "paper" (ADM + CLIP guidance) or "latent" (Blended Latent Diffusion)
    pipeline: Optional[Pipeline] = None  # the latent method's models

    @property
    def required_models(self) -> list[ModelSpec]:
        """The files an edit always needs; the preset is ready when these are."""
        if self.pipeline is not None:
            return list(self.pipeline.files) + ([self.clip] if self.clip is not None else [])
        return [spec for spec in (self.diffusion, self.clip) if spec is not None]

    @property
    def optional_models(self) -> list[ModelSpec]:
        return [self.lpips] if self.lpips is not None else []

    @property
    def models(self) -> list[ModelSpec]:
        """Every file of the preset (``download`` fetches all of them)."""
        return self.required_models + self.optional_models


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError(f"Preset data file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def load_model_spec(name: str) -> ModelSpec:
    path = MODELS_DIR / f"{name}.json"
    if not name or Path(name).name != name or not path.is_file():
        raise InputError(f"Unknown model {name!r}: no data file {path}")
    return ModelSpec.from_dict(name, _read_json(path), str(path))


def list_presets() -> list[str]:
    """Names of the built-in presets (``engine/models/presets/*.json``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def _edit_defaults(data: dict, source: Path) -> dict:
    """The preset's ``edit_defaults`` as data: an object of edit parameters, never the prompt.

    Whether each key names an edit parameter is checked by
    ``engine.editing.shared.params.preset_edit_defaults`` where the settings are used: the model files must
    not depend on the editing job.
    """
    values = data.get("edit_defaults")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{source}: 'edit_defaults' must be an object of edit parameters")
    if "prompt" in values:
        raise InputError(f"{source}: 'edit_defaults' may not set 'prompt': the prompt is always the user's")
    return dict(values)


def _model_entry(entry: object, name: str, source: Path, base_dir: Path) -> ModelSpec:
    """A model named from ``specs/`` or given inline; an inline one may name its own ``directory``."""
    if isinstance(entry, str):
        return load_model_spec(entry)
    if not isinstance(entry, dict):
        raise InputError(f"{source}: a model must be named or given as an object")
    spec = ModelSpec.from_dict(entry.get("name", name), entry, f"{source} ({name})")
    if entry.get("directory"):
        spec.directory = _folder(entry["directory"], base_dir)
    return spec


def _folder(value: object, base_dir: Path) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else (base_dir / path).resolve()


def _latent_preset(name: str, data: dict, source: Path, base_dir: Path, directory: Optional[Path]) -> Preset:
    """A ``"method": "latent"`` preset: a diffusers folder (``pipeline``) and an optional ranking CLIP.

    Without a ``directory`` the folder is ``<weights folder>/<pipeline.folder or the preset's name>``.
    """
    spec = data.get("pipeline")
    if not isinstance(spec, dict):
        raise InputError(f"{source}: a latent preset needs a 'pipeline' object")
    family = spec.get("family", "sd")
    dtype = spec.get("dtype", "auto")
    if family not in PIPELINE_FAMILIES:
        raise InputError(f"{source}: pipeline 'family' must be one of {PIPELINE_FAMILIES}, got {family!r}")
    if dtype not in PIPELINE_DTYPES:
        raise InputError(f"{source}: pipeline 'dtype' must be one of {PIPELINE_DTYPES}, got {dtype!r}")
    scheduler = spec.get("scheduler", "ddim")
    if scheduler not in PIPELINE_SCHEDULERS:
        raise InputError(
            f"{source}: pipeline 'scheduler' must be one of {PIPELINE_SCHEDULERS}, got {scheduler!r}"
        )
    min_steps = spec.get("min_steps", 0)
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise InputError(f"{source}: pipeline 'min_steps' must be a whole number >= 0, got {min_steps!r}")
    try:
        resolution, guidance = int(spec["resolution"]), float(spec["guidance_scale"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{source}: pipeline needs 'resolution' (pixels) and 'guidance_scale'") from None
    files = spec.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(f"{source}: pipeline 'files' must map each needed file to its digest and size")
    folder = str(spec.get("folder") or name)
    prefix = "" if directory is not None else f"{folder}/"
    hub = HubSource.from_dict(spec["source"], source) if spec.get("source") is not None else None
    specs = []
    for rel, entry in files.items():
        entry = dict(entry or {})
        entry.update(kind=PIPELINE_FILE, file=f"{prefix}{rel}")
        if entry.get("sha256") is None:
            # no published digest: recorded when a folder placed by hand is first loaded, or taken from the
            # hub's Git LFS pointer at the pinned revision when ``download`` fetches it (engine/models/hub.py)
            entry["trust_on_first_use"] = True
        file_spec = ModelSpec.from_dict(f"{name}:{rel}", entry, f"{source} (pipeline file {rel})")
        file_spec.directory = directory
        file_spec.source_path = rel if hub is not None else None
        specs.append(file_spec)
    root = directory if directory is not None else Path(folder)  # relative: under the weights folder
    licence = str(spec.get("licence", ""))
    pipeline = Pipeline(family, resolution, dtype, guidance, root, specs, licence, hub, scheduler, min_steps)
    clip = _model_entry(data["clip"], f"{name}-clip", source, base_dir) if data.get("clip") else None
    if clip is not None and clip.kind != "clip":
        raise InputError(f"{source}: 'clip' refers to a {clip.kind} model")
    return Preset(
        name=name,
        description=data.get("description", ""),
        diffusion=None,
        clip=clip,
        source=source,
        edit_defaults=_edit_defaults(data, source),
        method="latent",
        pipeline=pipeline,
    )


def pipeline_root(preset: Preset, weights_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The folder a latent preset's diffusers files are read from."""
    assert preset.pipeline is not None
    root = preset.pipeline.root
    return root if root.is_absolute() else resolve_weights_dir(weights_dir) / root


def _preset_from_data(
    name: str, data: dict, source: Path, base_dir: Path, default_dir: Optional[Path]
) -> Preset:
    directory = default_dir
    if data.get("directory"):
        directory = _folder(data["directory"], base_dir)
    method = data.get("method", "paper")
    if method not in METHODS:
        raise InputError(f"{source}: 'method' must be one of {METHODS}, got {method!r}")
    if method == "latent":
        return _latent_preset(name, data, source, base_dir, directory)
    specs = {}
    for kind in MODEL_KINDS:
        entry = data.get(kind)
        if isinstance(entry, str):
            spec = load_model_spec(entry)
        elif isinstance(entry, dict):
            spec = ModelSpec.from_dict(entry.get("name", f"{name}-{kind}"), entry, f"{source} ({kind})")
        else:
            raise InputError(f"{source}: '{kind}' must name a model or hold a model object")
        if spec.kind != kind:
            raise InputError(f"{source}: '{kind}' refers to a {spec.kind} model")
        if directory is not None:
            spec.directory = directory
        specs[kind] = spec
    lpips_spec = None
    entry = data.get("lpips")
    if entry is not None:
        if isinstance(entry, str):
            lpips_spec = load_model_spec(entry)
        elif isinstance(entry, dict):
            lpips_spec = ModelSpec.from_dict(entry.get("name", f"{name}-lpips"), entry, f"{source} (lpips)")
        else:
            raise InputError(f"{source}: 'lpips' must name a model or hold a model object")
        if lpips_spec.kind != OPTIONAL_KINDS["lpips"]:
            raise InputError(f"{source}: 'lpips' refers to a {lpips_spec.kind} model, not an lpips_backbone")
        if directory is not None:
            lpips_spec.directory = directory
    return Preset(
        name=name,
        description=data.get("description", ""),
        diffusion=specs["diffusion"],
        clip=specs["clip"],
        source=source,
        edit_defaults=_edit_defaults(data, source),
        lpips=lpips_spec,
    )


def get_preset(name_or_folder: str) -> Preset:
    """A built-in preset by name, or a folder holding a ``preset.json``."""
    if not name_or_folder:
        raise UnknownPresetError("No models preset given.")
    builtin = PRESETS_DIR / f"{name_or_folder}.json"
    if Path(name_or_folder).name == name_or_folder and builtin.is_file():
        return _preset_from_data(name_or_folder, _read_json(builtin), builtin, REPO_ROOT, None)
    folder = Path(name_or_folder).expanduser()
    if folder.is_dir():
        source = folder / "preset.json"
        if not source.is_file():
            raise UnknownPresetError(f"The models folder {folder} has no preset.json.")
        data = _read_json(source)
        return _preset_from_data(
            data.get("name", folder.name), data, source, folder.resolve(), folder.resolve()
        )
    raise UnknownPresetError(
        f"Unknown models preset {name_or_folder!r}. Known presets: {', '.join(list_presets())}; "
        "or give a folder that holds a preset.json."
    )
