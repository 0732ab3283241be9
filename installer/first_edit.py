"""The first edit: an example image edited with the best models present, to show the install works."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path
from typing import List, Sequence

from installer.environment import engine_env
from installer.errors import InstallError
from installer.layout import REPO, Layout
from installer.manifest import Manifest, remove_path, write_atomic
from installer.weights import claim_weights_dir

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
