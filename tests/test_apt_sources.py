"""tests/apt_sources.py: the Debian mirror the Krita roots are built from, read from apt's two formats."""

from pathlib import Path

from tests import krita_roots
from tests.apt_sources import AptSource, deb822_sources, debian_mirror, one_line_sources

ONE_LINE = """\
# deb http://commented.example/debian sid main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main   # trailing comment
deb http://[::1]:3142/debian sid
broken line
deb http://only-uri.example/debian
"""

DEB822 = """\
# the machine's own archive
Types: deb deb-src
URIs: http://deb.debian.org/debian https://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://disabled.example/debian
Suites: sid
Components: main
Enabled: no

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""


def test_one_line_entries_with_options_comments_and_bad_lines():
    assert one_line_sources(ONE_LINE) == [
        AptSource("deb-src", "http://src.example/debian", ("bookworm",), ("main",)),
        AptSource("deb", "http://ftp.de.debian.org/debian/", ("bookworm",), ("main", "contrib")),
        AptSource("deb", "http://security.debian.org/debian-security", ("bookworm-security",), ("main",)),
        AptSource("deb", "http://[::1]:3142/debian", ("sid",), ()),
    ]


def test_deb822_stanzas_with_several_types_uris_and_a_disabled_one():
    suites, components = ("bookworm", "bookworm-updates"), ("main", "non-free-firmware")
    assert deb822_sources(DEB822) == [
        AptSource("deb", "http://deb.debian.org/debian", suites, components),
        AptSource("deb", "https://mirror.example.org/debian", suites, components),
        AptSource("deb-src", "http://deb.debian.org/debian", suites, components),
        AptSource("deb-src", "https://mirror.example.org/debian", suites, components),
        AptSource("deb", "https://deb.nodesource.com/node_20.x", ("nodistro",), ("main",)),
    ]


def write_apt(tmp_path: Path, main: str = "", **parts: str) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if main:
        (tmp_path / "sources.list").write_text(main)
    for name, text in parts.items():
        (tmp_path / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return tmp_path


def test_the_mirror_is_the_first_debian_archive_in_apts_order(tmp_path):
    security_first = "deb http://security.debian.org/debian-security bookworm-security main\n"
    apt = write_apt(tmp_path, security_first, b_sources=DEB822, a_list=ONE_LINE)
    # sources.list's only entry is the security archive; then sources.list.d/ by name: a.list first
    assert debian_mirror(apt) == "http://ftp.de.debian.org/debian"


def test_only_deb822_and_files_apt_ignores(tmp_path):
    apt = write_apt(tmp_path, debian_sources=DEB822, old_list_disabled="deb http://x.example/debian sid\n")
    assert debian_mirror(apt) == "http://deb.debian.org/debian"


def test_no_debian_archive_means_no_mirror_and_a_reason(tmp_path, monkeypatch):
    apt = write_apt(tmp_path, "deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert debian_mirror(apt) is None
    monkeypatch.delenv("BD_DEBIAN_MIRROR", raising=False)
    monkeypatch.setattr(krita_roots, "debian_mirror", lambda: None)
    assert krita_roots.mirror() is None
    monkeypatch.setattr(krita_roots.os, "geteuid", lambda: 0)
    monkeypatch.setattr(krita_roots.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    assert "BD_DEBIAN_MIRROR" in (krita_roots.cannot_build() or "")


def test_the_environment_variable_overrides_the_machines_sources(monkeypatch):
    override = "http://mirror.local/debian"
    monkeypatch.setattr(krita_roots, "debian_mirror", lambda: "http://deb.debian.org/debian")
    monkeypatch.setenv("BD_DEBIAN_MIRROR", override)
    assert krita_roots.mirror() == override
    monkeypatch.delenv("BD_DEBIAN_MIRROR")
    assert krita_roots.mirror() == "http://deb.debian.org/debian"
