"""Root trees from a lock: the same lock (and package files) gives a bit-identical tree.

The format (formats/deb, formats/rpm) unpacks and configures the packages; this module owns what is
the same for every format: the install order, building beside the destination, and normalising.

Built in `DEST.tmp-XXXX` beside DEST and renamed only when complete. Packages go in dependency
order (topological over the lock's `depends`, cycles kept together, ties by name). Afterwards the
tree is normalised: host- and time-dependent files are removed or emptied (machine-id, logs, caches,
random seeds, backup files) and every mtime newer than SOURCE_DATE_EPOCH is clamped to it. The epoch
defaults to the newest repository date recorded in the lock, never the wall clock.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cernvm_build import formats
from cernvm_build.errors import RootfsError
from cernvm_build.lock.lockfile import Closure, LockedPackage, lock_epoch
from cernvm_build.util.files import source_date_epoch

log = logging.getLogger(__name__)

MODES = ("unpack", "install")


def install_order(closure: Closure) -> list[LockedPackage]:
    """Dependencies first; a dependency cycle is one unit ordered by name; ties broken by name."""
    import networkx as nx

    g = nx.DiGraph()
    by_name = {p.name: p for p in closure.packages}
    g.add_nodes_from(by_name)
    for p in closure.packages:
        for d in p.depends:
            if d in by_name and d != p.name:
                g.add_edge(d, p.name)
    cond = nx.condensation(g)
    members = {c: sorted(cond.nodes[c]["members"]) for c in cond.nodes}
    order: list[LockedPackage] = []
    for c in nx.lexicographical_topological_sort(cond, key=lambda c: members[c][0]):
        order.extend(by_name[n] for n in members[c])
    return order


# Paths whose content depends on the host, the time or chance, not on the lock (mmdebstrap, mkosi).
# Logs are removed when they have content; empty ones (wtmp, btmp, lastlog) stay for their modes.
REMOVE_GLOBS = (
    "var/log/**/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
    "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
    "var/lib/apt/lists/*_*", "var/lib/apt/lists/partial/*",
    "etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/subuid-", "etc/subgid-",
    "var/lib/systemd/random-seed", "var/lib/urandom/random-seed", "var/lib/random-seed",
    "var/lib/dbus/machine-id", "etc/resolv.conf", "etc/hostname", "var/lib/dpkg/triggers/Lock",
    "var/lib/dpkg/lock", "var/lib/dpkg/lock-frontend", "var/cache/man/**/*",
    "var/lib/dhcp/*.leases", "etc/ssh/ssh_host_*", "tmp/**/*", "var/tmp/**/*", "root/.bash_history",
)


def normalize_tree(root: Path, sde: int) -> list[str]:
    """Remove/empty non-reproducible files, then clamp mtimes; returns what was removed."""
    removed: list[str] = []
    for pattern in REMOVE_GLOBS:
        for p in sorted(root.glob(pattern), reverse=True):
            if p.is_symlink() or p.is_file() or (p.exists() and not p.is_dir()):
                rel = str(p.relative_to(root))
                # a package-shipped symlink (resolv.conf -> systemd) is content, not a host leak
                if p.is_symlink() and rel == "etc/resolv.conf":
                    continue
                # empty log files made by postinsts (wtmp, btmp, lastlog) carry modes, not history
                if rel.startswith("var/log/") and not p.is_symlink() and p.stat().st_size == 0:
                    continue
                p.unlink()
                removed.append(rel)
    mid = root / "etc/machine-id"
    if mid.is_symlink():
        mid.unlink()
    if (root / "etc").is_dir():
        mid.write_bytes(b"")
        os.chmod(mid, 0o444)
    clamp_mtimes(root, sde)
    return sorted(removed)


def clamp_mtimes(root: Path, sde: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if st.st_mtime > sde or st.st_atime != st.st_mtime:
                t = min(int(st.st_mtime), sde)
                os.utime(p, (t, t), follow_symlinks=False)
    os.utime(root, (sde, sde))


@dataclass
class RootfsOptions:
    mode: str = "unpack"
    sde: int | None = None                 # None: $SOURCE_DATE_EPOCH, else the lock's newest date
    merged_usr: bool | None = None         # None: when the closure contains usr-is-merged/usrmerge
    warn: Callable[[str], None] = log.warning


@dataclass
class RootfsResult:
    dest: Path
    sde: int
    packages: int
    seconds: float
    skipped_devices: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def build_rootfs(closure: Closure, dest: str | Path, package_files: dict[str, Path],
                 options: RootfsOptions | None = None) -> RootfsResult:
    """Build the tree for CLOSURE at DEST from verified PACKAGE_FILES (name -> file)."""
    options = options or RootfsOptions()
    if options.mode not in MODES:
        raise RootfsError(f"unknown mode {options.mode!r} (expected one of {', '.join(MODES)})")
    dest = Path(dest).absolute()
    if os.path.lexists(dest):
        raise RootfsError(f"{dest} already exists; refusing to build over it")
    sde = options.sde if options.sde is not None else source_date_epoch(lock_epoch(closure))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.tmp-", dir=dest.parent))
    start = time.monotonic()
    try:
        os.chmod(tmp, 0o755)
        fmt = formats.get(closure.flavour, RootfsError, "root tree")
        result = fmt.build_tree(closure, tmp, package_files, options, sde)
        removed = normalize_tree(tmp, sde)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.ismount(tmp / "proc"):
            log.error("%s/proc is still mounted; leaving %s for inspection", tmp, tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RootfsResult(dest, sde, len(closure.packages), time.monotonic() - start,
                        result.get("skipped_devices", []), removed)
