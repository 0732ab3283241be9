"""This machine's Debian mirror, read from its apt sources, so the tests name no package host of their own.

apt keeps its sources in two formats: one-line entries (``/etc/apt/sources.list``, ``sources.list.d/*.list``:
``deb [options] URI suite [component...]``) and deb822 stanzas (``sources.list.d/*.sources``: ``Types:``,
``URIs:``, ``Suites:``, ``Components:``, ``Enabled:``). The mirror is the first ``deb`` source of Debian's
main archive: a URI whose path has a ``debian`` folder (``http://deb.debian.org/debian``, a national
mirror's ``/debian``), which the security archive (``/debian-security``) and third-party repositories lack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence
from urllib.parse import urlsplit

SCHEMES = ("http", "https", "ftp", "file")  # what debootstrap can fetch from


@dataclass(frozen=True)
class AptSource:
    kind: str  # deb or deb-src
    uri: str
    suites: Sequence[str]
    components: Sequence[str]


def one_line_sources(text: str) -> List[AptSource]:
    """The entries of a sources.list file; comments, blank lines and malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        kind, _, rest = line.split("#", 1)[0].strip().partition(" ")
        rest = rest.strip()
        if rest.startswith("["):  # options: deb [arch=amd64 signed-by=...] URI suite ...
            rest = rest.partition("]")[2]
        fields = rest.split()
        if kind in ("deb", "deb-src") and len(fields) >= 2:
            out.append(AptSource(kind, fields[0], (fields[1],), tuple(fields[2:])))
    return out


def deb822_sources(text: str) -> List[AptSource]:
    """The sources of a deb822 ``.sources`` file: one per type, URI and stanza; ``Enabled: no`` skipped."""
    out = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        suites, components = stanza.get("suites", "").split(), tuple(stanza.get("components", "").split())
        for kind in stanza.get("types", "").split():
            out.extend(
                AptSource(kind, uri, tuple(suites), components) for uri in stanza.get("uris", "").split()
            )
    return out


def _stanzas(text: str) -> Iterable[dict]:
    """Field name (lower case) -> value per stanza; continuation lines (leading blank) join their field."""
    fields: dict = {}
    name = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, name = {}, None
        elif raw[0] in " \t":
            if name is not None:
                fields[name] += "\n" + raw.strip()
        elif ":" in raw:
            name, _, value = raw.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()


def is_debian_archive(source: AptSource) -> bool:
    parts = urlsplit(source.uri)
    return (
        source.kind == "deb"
        and parts.scheme in SCHEMES
        and "debian" in parts.path.split("/")
        and not any(suite.endswith("-security") for suite in source.suites)
    )


def machine_sources(apt_dir: Path = Path("/etc/apt")) -> List[AptSource]:
    """Every source this machine's apt reads, in apt's order: sources.list, then sources.list.d/ by name."""
    found = []
    main = apt_dir / "sources.list"
    if main.is_file():
        found.extend(one_line_sources(main.read_text(errors="replace")))
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.iterdir()) if parts.is_dir() else ():
        if path.suffix == ".list":
            found.extend(one_line_sources(path.read_text(errors="replace")))
        elif path.suffix == ".sources":
            found.extend(deb822_sources(path.read_text(errors="replace")))
    return found


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> Optional[str]:
    """The first Debian archive among this machine's apt sources (no trailing slash), or None."""
    for source in machine_sources(apt_dir):
        if is_debian_archive(source):
            return source.uri.rstrip("/")
    return None
