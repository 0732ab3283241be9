"""Krita's kritarc: the plugin's ``[python]`` ``enable_blended_diffusion=true`` line set on install and put
back as it was on uninstall, keeping every other line (Krita rewrites the file with settings of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from installer.errors import InstallError
from installer.layout import PLUGIN_NAME, Layout
from installer.manifest import Manifest, sha256_bytes, write_atomic

ENABLE_KEY = f"enable_{PLUGIN_NAME}"


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


def enable_plugin(manifest: Manifest, layout: Layout) -> None:
    """Step 2: set the line; the first install records how to put kritarc back (its bytes, the old line)."""
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


def restore_kritarc(record: dict) -> None:
    """For --uninstall: the bytes from before when kritarc is as the install left it, else only the line."""
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
