"""The docker's settings as typed values: an edit's options, the Extend section's sides, the engine."""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .. import extending
from ..params import EditOptions


@dataclass
class EngineSettings:
    mode: str = "local"  # "local": start the engine install.py recorded; "remote": connect to host:port
    host: str = "127.0.0.1"
    port: int = 7860
    token: str = ""
    fingerprint: str = ""  # remote: SHA-256 of the engine's TLS certificate; set, the connection is TLS
    device: str = ""  # empty: the engine picks
    models: str = ""  # empty: the preset install.py recorded
    config_path: Optional[str] = None


def saved_engine_settings(store: Any) -> EngineSettings:
    """The engine the user chose in the docker, from the plugin's settings (a SettingsStore): what the
    docker and scripts without ``engine=`` both use."""
    return EngineSettings(
        mode=store.get("engine_mode"),
        host=store.get("remote_host"),
        port=store.get("remote_port"),
        token=store.get("remote_token"),
        fingerprint=store.get("remote_fingerprint"),
        device=store.get("device"),
        models=store.get("models"),
    )


def edit_options(store: Any) -> EditOptions:
    """An edit's options from the docker's settings."""
    s = store
    removal = s.get("removal")
    return EditOptions(
        prompt="" if removal else s.get("prompt"),
        candidates=s.get("candidates"),
        strength=s.get("strength"),
        steps=s.get("steps"),
        aug_num=s.get("aug_num"),
        guidance_scale=s.get("guidance_scale"),
        seed=s.get("seed") if s.get("seed_mode") == "fixed" else None,
        scribble=s.get("scribble"),
        background=s.get("background"),
        baseline=s.get("baseline"),
        ddim=s.get("ddim"),
        preview_every=5 if s.get("live_preview") else 0,
        quality=s.get("quality"),
        detail=s.get("detail"),
    )


def extend_sides(store: Any) -> Tuple[Dict[str, int], Dict[str, str]]:
    """(pixels per side, the sides' own prompts) from the docker's Extend section."""
    s = store
    sides = {side: s.get(f"extend_{side}") for side in extending.SIDES}
    prompts = {
        side: s.get(f"extend_prompt_{side}").strip()
        for side in extending.SIDES
        if sides[side] and s.get(f"extend_prompt_{side}").strip()
    }
    return sides, prompts
