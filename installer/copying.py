"""The code the install copies: the plugin into Krita's folders, the engine into the per-user data folder."""

from __future__ import annotations

from installer.errors import InstallError
from installer.layout import PLUGIN_NAME, REPO, Layout
from installer.manifest import Manifest, install_file, install_tree

# What the engine needs at run time, copied into the engine root (resources holds the shipped toy models).
ENGINE_PARTS = ("engine", "bridge", "toyworld", "resources")


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


def install_engine_code(manifest: Manifest, layout: Layout) -> None:
    if layout.engine_root == REPO:
        return
    manifest.ensure_dir(layout.engine_root)
    for part in ENGINE_PARTS:
        source = REPO / part
        if source.is_dir():
            install_tree(manifest, source, layout.engine_root / part)
