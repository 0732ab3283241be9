"""Other Kritas for the tests: Debian roots holding Krita 6 (Qt6) and Krita 5.3 (Qt5), and kritarunner run
inside them with this checkout, its test venv and the test's temporary files at the same paths.

A root is built once with ``debootstrap --variant=minbase sid`` plus the Krita of one Debian suite (about
2 minutes and 2.5 GB each) and kept in ``$BD_KRITA_ROOTS`` (default ``/var/cache/blended-diffusion/roots``),
so later runs start at once. Build by hand with ``python3 -m tests.krita_roots krita6 [krita53]``. The Debian
mirror is this machine's own (its apt sources: tests/apt_sources.py), or ``$BD_DEBIAN_MIRROR``.

Inside a root, the engine the plugin starts is this checkout's ``.venv`` Python: the checkout, the venv's
base Python and ``/tmp`` are bind-mounted at their own paths in a private mount namespace (``unshare -m``),
so nothing leaks to the host's mounts and the tests read the root's results where they wrote them.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from tests.apt_sources import debian_mirror

ROOT = Path(__file__).resolve().parents[1]
ROOTS = Path(os.environ.get("BD_KRITA_ROOTS", "/var/cache/blended-diffusion/roots"))


@dataclass(frozen=True)
class KritaRoot:
    name: str
    suite: str  # the Debian suite Krita comes from
    packages: Sequence[str]
    qt: int

    @property
    def path(self) -> Path:
        return ROOTS / self.name

    @property
    def stamp(self) -> Path:
        return self.path / ".bd-root-ready"

    def ready(self) -> bool:
        return self.stamp.exists()


KRITA6 = KritaRoot("krita6", "experimental", ("krita", "python3-pyqt6"), 6)
KRITA53 = KritaRoot("krita53", "sid", ("krita", "python3-pyqt5"), 5)
KNOWN = {r.name: r for r in (KRITA6, KRITA53)}

APT_CONF = 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'


def cannot_build() -> Optional[str]:
    """Why no root can be built or used here, or None."""
    if sys.platform != "linux":
        return "the Krita roots are Debian chroots: Linux only"
    if os.geteuid() != 0:
        return "building and entering a Debian root needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", "unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install debootstrap util-linux mount)"
    if mirror() is None:
        return "no Debian mirror in this machine's apt sources (/etc/apt): set BD_DEBIAN_MIRROR to one"
    return None


def mirror() -> Optional[str]:
    """The Debian mirror the roots are built from: ``$BD_DEBIAN_MIRROR``, else this machine's own."""
    return os.environ.get("BD_DEBIAN_MIRROR") or debian_mirror()


def _run(cmd: List[str], log) -> None:
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def build(root: KritaRoot, log=None) -> Path:
    """Build ``root`` if it is not ready (a half-built one is started again); return its path."""
    if root.ready():
        return root.path
    why = cannot_build()
    if why:
        raise RuntimeError(why)
    log = log or sys.stderr
    root.path.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs on one machine would otherwise build the same root at once, each removing the other's.
    with open(root.path.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not root.ready():  # the run holding the lock before us may have built it
            _build_locked(root, log, mirror() or "")
    return root.path


def _build_locked(root: KritaRoot, log, mirror_url: str) -> None:
    if root.path.exists():
        shutil.rmtree(root.path)
    _run(["debootstrap", "--variant=minbase", "sid", str(root.path), mirror_url], log)
    (root.path / "etc/apt/sources.list").write_text(
        f"deb {mirror_url} sid main\ndeb {mirror_url} experimental main\n"
    )
    (root.path / "etc/apt/apt.conf.d/99bd-tests").write_text(APT_CONF)
    env = "DEBIAN_FRONTEND=noninteractive"
    install = f"apt-get install -y -q -t {root.suite} {' '.join(root.packages)} xauth"
    script = f"export {env}; apt-get update -q && {install} && apt-get clean"
    _run(["chroot", str(root.path), "/bin/sh", "-c", script], log)
    root.stamp.write_text(f"{root.suite}: {' '.join(root.packages)}\n")


def bind_paths(extra: Sequence[Path] = ()) -> List[Path]:
    """What the root must see at its own path: the checkout, the venv's base Python, /tmp."""
    paths = [ROOT, Path(sys.base_prefix), Path("/tmp"), *extra]
    out: List[Path] = []
    for p in paths:
        p = p.resolve()
        if not any(p == q or q in p.parents for q in out):
            out = [q for q in out if p not in q.parents] + [p]
    return out


def chroot_command(
    root: KritaRoot, argv: Sequence[str], env: Mapping[str, str], cwd: Path, keep: Sequence[str] = ()
) -> List[str]:
    """``argv`` run inside ``root`` as ``unshare -m`` + bind mounts + chroot, with ``env`` and ``cwd``, plus
    the variables named in ``keep`` as the caller's environment has them when the command starts."""
    base = root.path
    lines = ["set -e", f"mount --rbind /dev {base}/dev", f"mount -t proc proc {base}/proc"]
    for p in bind_paths():
        lines.append(f"mkdir -p {shlex.quote(str(base) + str(p))}")
        lines.append(f"mount --rbind {shlex.quote(str(p))} {shlex.quote(str(base) + str(p))}")
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items() if k not in keep)
    env_args += "".join(f' {k}="${{{k}:-}}"' for k in keep)
    inner = f"cd {shlex.quote(str(cwd))} && exec env -i {env_args} {shlex.join(list(argv))}"
    lines.append(f"exec chroot {base} /bin/sh -c {shlex.quote(inner)}")
    return ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", "\n".join(lines)]


def root_environment(env: Mapping[str, str]) -> Dict[str, str]:
    """The host test environment made fit for a root: its own PATH and a UTF-8 locale (Krita 6 warns
    under C); the variables the scenarios read are kept."""
    out = {k: v for k, v in env.items() if not k.startswith(("LD_", "PYTHONHOME", "VIRTUAL_ENV"))}
    out["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    out["LANG"] = out["LC_ALL"] = "C.UTF-8"
    return out


if __name__ == "__main__":
    names = sys.argv[1:] or ["krita6"]
    for name in names:
        print(f"{name}: {build(KNOWN[name])}")
