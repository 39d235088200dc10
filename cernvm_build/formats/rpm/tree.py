"""rpm root trees: the lock is the closure, so rpm is given exactly the locked files (no dnf resolution).

unpack: each payload (`rpm2archive -n`, an uncompressed tar on stdout) goes through the same checked
extractor as Debian's data.tar, in the lock's dependency order, with no scriptlets; then the tree's
rpm database records the set (`rpm --justdb --noscripts`), so `rpm --root DEST -qa` answers in both
modes. Works as an ordinary user (owners are then the caller's, as with Debian).

install: one `rpm --root DEST --install` transaction of every locked file, scriptlets and triggers
included (they run chrooted, so this needs root), with /proc and the basic /dev nodes present only
for the transaction.

rpm is hermetic here: only rpm's own rpmrc and macro files are read (not /etc/rpmrc, /etc/rpm/macros*,
~/.rpmrc or ~/.rpmmacros, where a host setting such as %_netsharedpath or %_excludedocs would silently
change the tree), the values that decide which files land are defined explicitly, and no rpm plugin
(SELinux labels, ...) runs. Unpack mode writes each file's capabilities from the header (the payload
has none) as rpm --install does; that needs root, as setting security.capability does.

The database path is pinned to /var/lib/rpm (Debian's rpm defaults to ~/.rpmdb): query a tree with
`rpm --root DEST --dbpath /var/lib/rpm -qa`. The database is deterministic: rpm 4.18 takes
INSTALLTIME/INSTALLTID from SOURCE_DATE_EPOCH, and two builds give a byte-identical rpmdb.sqlite once
the WAL is folded in (see finish_database). Nothing in tree-digest is excluded for rpm.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cernvm_build.errors import RootfsError
from cernvm_build.formats.rpm.filecaps import XATTR as CAP_XATTR
from cernvm_build.formats.rpm.filecaps import encode as encode_caps
from cernvm_build.formats.rpm.filecaps import rpm_file_caps
from cernvm_build.lock.lockfile import Closure, LockedPackage
from cernvm_build.rootfs.chroot import mounted_proc
from cernvm_build.rootfs.safety import SafeTree, member_parts
from cernvm_build.util.content_store import copy_verified

log = logging.getLogger(__name__)

DBPATH = "/var/lib/rpm"
RPM_LIB = "/usr/lib/rpm"
# rpm's own configuration only: never the host administrator's or the user's
RCFILES = f"{RPM_LIB}/rpmrc"
MACROFILES = f"{RPM_LIB}/macros:{RPM_LIB}/platform/%{{_target}}/macros"
# the settings that decide which files an install writes, stated rather than inherited
DEFINES = (("_install_langs", "all"), ("_excludedocs", "0"), ("_netsharedpath", "%{nil}"))


def rpm_base(root: Path) -> list[str]:
    """rpm aimed at the tree, independent of the host's database location and configuration."""
    cmd = ["rpm", "--rcfile", RCFILES, "--macros", MACROFILES, "--root", str(root), "--dbpath", DBPATH]
    for name, value in DEFINES:
        cmd += ["--define", f"{name} {value}"]
    return cmd


def rpm_env(sde: int) -> dict[str, str]:
    """Scriptlets and rpm itself see a fixed environment; SOURCE_DATE_EPOCH fixes the install times."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root", "TERM": "dumb",
            "SOURCE_DATE_EPOCH": str(sde)}


def _run(cmd: list[str], sde: int, what: str) -> str:
    r = subprocess.run(cmd, env=rpm_env(sde), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace")
    out = r.stdout + r.stderr
    if r.returncode:
        # Debian's rpm always prints its "use Alien instead" notice: not worth showing
        lines = [ln for ln in out.strip().splitlines() if "Alien" not in ln and "know what you are doing" not in ln]
        raise RootfsError(f"{what} failed (exit {r.returncode}): " + "\n".join(lines[-15:]))
    return out


# ---- owners --------------------------------------------------------------------------------------

@dataclass
class TreeIds:
    """Owner names -> ids from the tree's own /etc/passwd and /etc/group, re-read when they change.

    rpm payloads name owners; rpm resolves them in the target root, falling back to root (0) with
    a warning for an unknown name. We do the same, so a package unpacked after `setup` gets its ids.
    """

    root: Path
    warn: Callable[[str], None] = log.warning
    _cache: dict[str, tuple[tuple[int, int], dict[str, int]]] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)

    def _table(self, name: str) -> dict[str, int]:
        p = self.root / "etc" / name
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return {}
        if not stat.S_ISREG(st.st_mode):   # never read through a symlink out of the tree
            return {}
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit and hit[0] == key:
            return hit[1]
        table: dict[str, int] = {}
        for line in p.read_text(errors="replace").splitlines():
            f = line.split(":")
            if len(f) >= 3 and f[2].isdigit():
                table.setdefault(f[0], int(f[2]))
        self._cache[name] = (key, table)
        return table

    def _id(self, kind: str, name: str) -> int:
        if not name or name == "root":
            return 0
        got = self._table(kind).get(name)
        if got is None:
            if (kind, name) not in self._warned:
                self._warned.add((kind, name))
                self.warn(f"{'user' if kind == 'passwd' else 'group'} {name} does not exist in the tree "
                          "- using root")
            return 0
        return got

    def __call__(self, m: tarfile.TarInfo) -> tuple[int, int]:
        return self._id("passwd", m.uname), self._id("group", m.gname)


# ---- unpack --------------------------------------------------------------------------------------

def payload_tar(rpm: Path, out: Path, what: str) -> Path:
    """The payload of RPM as an uncompressed tar at OUT (decompression runs ahead in threads)."""
    with open(rpm, "rb") as src, open(out, "wb") as f:
        r = subprocess.run(["rpm2archive", "-n"], stdin=src, stdout=f, stderr=subprocess.PIPE)
    if r.returncode:
        raise RootfsError(f"{what}: rpm2archive failed: {r.stderr.decode(errors='replace').strip()}")
    return out


def unpack_all(tree: SafeTree, order: list[LockedPackage], files: dict[str, Path], workdir: Path,
               jobs: int | None = None, lookahead: int = 8) -> dict[str, list[str]]:
    """Extract ORDER strictly in sequence while later payloads decompress; name -> member paths."""
    from cernvm_build.util.ahead import in_order_ahead

    workdir.mkdir(parents=True, exist_ok=True)
    listings: dict[str, list[str]] = {}

    skipped_caps: list[str] = []

    def prepare(i: int, p: LockedPackage) -> tuple[Path, list[tuple[str, str]]]:
        what = f"{p.name} {p.evr}"
        return payload_tar(files[p.name], workdir / f"{i}.tar", what), rpm_file_caps(str(files[p.name]), what)

    def consume(i: int, p: LockedPackage, prepared: tuple[Path, list[tuple[str, str]]]) -> None:
        tar, caps = prepared
        try:
            if tar.stat().st_size == 0:     # a package without files: rpm2archive writes nothing
                listings[p.name] = []
                return
            with open(tar, "rb") as f:
                listings[p.name] = tree.extract(f, f"{p.name} {p.evr}")
        finally:
            tar.unlink(missing_ok=True)
        skipped_caps.extend(apply_file_caps(tree, caps, f"{p.name} {p.evr}"))

    in_order_ahead(order, prepare, consume, jobs, lookahead)
    if skipped_caps:
        tree.warn(f"file capabilities of {len(skipped_caps)} files not set (security.capability needs root): "
                  + ", ".join(skipped_caps[:5]))
    return listings


def apply_file_caps(tree: SafeTree, caps: list[tuple[str, str]], what: str) -> list[str]:
    """Set each file's security.capability (after its owner and mode: a chown clears it); returns the
    files left without because we are not root."""
    skipped = []
    for name, text in caps:
        data = encode_caps(text)
        if not data:
            continue
        mwhat = f"{what}: {name}"
        path = tree.regular_file(member_parts(name.lstrip("/"), mwhat), mwhat, "the file with capabilities")
        if not tree.as_root:
            skipped.append(name)
            continue
        os.setxattr(path, CAP_XATTR, data, follow_symlinks=False)
    return skipped


# ---- install -------------------------------------------------------------------------------------

_DEV = (("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666), ("random", 1, 8, 0o666),
        ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666), ("console", 5, 1, 0o600))


@contextlib.contextmanager
def transaction_dev(root: Path) -> Iterator[None]:
    """The device nodes scriptlets write to (>/dev/null), only for the transaction: afterwards the
    tree's /dev is what its packages made of it (the booted system mounts devtmpfs there)."""
    dev = root / "dev"
    made_dir = not os.path.lexists(dev)
    dev.mkdir(exist_ok=True)
    made: list[Path] = []
    for name, major, minor, mode in _DEV:
        p = dev / name
        if not os.path.lexists(p):
            os.mknod(p, stat.S_IFCHR | mode, os.makedev(major, minor))
            os.chmod(p, mode)
            made.append(p)
    try:
        yield
    finally:
        for p in made:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISCHR(os.lstat(p).st_mode):
                    p.unlink()
        if made_dir:
            with contextlib.suppress(OSError):
                dev.rmdir()


def install(root: Path, order: list[LockedPackage], files: dict[str, Path], sde: int) -> None:
    """All locked packages in one rpm transaction, scriptlets and triggers run (chrooted)."""
    if os.geteuid() != 0:
        raise RootfsError("--mode install runs rpm scriptlets in a chroot and needs root "
                          "(use --mode unpack as an ordinary user)")
    # --nosignature: every file given here came from the package store, which admitted it only after
    # its size and sha256 matched the lock (and the lock pins the signed repomd.xml it was resolved
    # against). rpm still checks each package's own digests.
    cmd = rpm_base(root) + ["--install", "--nosignature", "--noplugins", *(str(files[p.name]) for p in order)]
    made_proc = not os.path.lexists(root / "proc")
    with transaction_dev(root), mounted_proc(root):
        _run(cmd, sde, "rpm --install")
    if made_proc:                 # our mount point, not a package's directory: same tree as unpack
        with contextlib.suppress(OSError):
            (root / "proc").rmdir()


def record_database(root: Path, order: list[LockedPackage], files: dict[str, Path], sde: int) -> None:
    """Unpack mode: register the set in the tree's rpmdb without touching files or running scripts.

    --nosignature for the same reason as in install(): the files were verified against the lock."""
    cmd = rpm_base(root) + ["--install", "--justdb", "--noscripts", "--notriggers", "--nosignature",
                            "--noplugins",
                            *(str(files[p.name]) for p in order)]
    _run(cmd, sde, "rpm --justdb --install")


def finish_database(root: Path) -> None:
    """Fold the WAL into rpmdb.sqlite and leave it in rollback-journal mode.

    rpm leaves the database in WAL mode with a -shm index whose bytes differ between runs (it is
    shared-memory scratch, not data). journal_mode=DELETE checkpoints and removes -wal/-shm, after
    which rpmdb.sqlite is byte-identical across builds, and later readers (`rpm -qa`) no longer create
    -wal/-shm beside it, which a read-only root (CernVM-FS) could not do anyway. A later rpm write
    inside the booted system switches it back to WAL by itself.
    """
    db = root / DBPATH.lstrip("/") / "rpmdb.sqlite"
    if not db.is_file():
        raise RootfsError(f"rpm left no database at {DBPATH}/rpmdb.sqlite in the tree")
    con = sqlite3.connect(str(db))
    try:
        mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    finally:
        con.close()
    if mode != "delete":
        raise RootfsError(f"{db}: could not leave WAL mode (journal_mode={mode})")
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def installed(root: Path) -> list[str]:
    """NEVRAs the tree's rpmdb records, sorted (what `rpm --root DEST -qa` prints)."""
    r = subprocess.run(rpm_base(root) + ["-qa", "--qf", "%{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}."
                                         "%{ARCH}\\n"], capture_output=True, text=True)
    if r.returncode:
        raise RootfsError(f"rpm -qa in {root} failed: {r.stderr.strip()}")
    return sorted(r.stdout.split())


# ---- entry point ---------------------------------------------------------------------------------

def verified_copies(order: list[LockedPackage], files: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Private, lock-verified copies of every package (hashed in parallel threads)."""
    from concurrent.futures import ThreadPoolExecutor

    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        copies = pool.map(lambda p: (p.name, copy_verified(files[p.name], p, dest / f"{p.sha256}.rpm")), order)
        return dict(copies)


def build(closure: Closure, root: Path, files: dict[str, Path], options, sde: int) -> dict:
    from cernvm_build.rootfs import install_order

    for tool in ("rpm", "rpm2archive"):
        if shutil.which(tool) is None:
            raise RootfsError(f"rpm root trees need `{tool}` on the host (Debian package 'rpm')")
    order = install_order(closure)
    for p in order:
        if p.name not in files:
            raise RootfsError(f"package {p.name} {p.evr}: no verified file (fetch it first)")
    tree = SafeTree(root, warn=options.warn)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.payloads-", dir=root.parent))
    try:
        # every package hashed against the lock on its way into a private copy: rpm and rpm2archive
        # read only the copies, so a cache file changed after fetch never reaches the tree or a scriptlet
        copies = verified_copies(order, files, work / "packages")
        if options.mode == "install":
            install(root, order, copies, sde)
        else:
            tree.owner = TreeIds(root, options.warn)
            unpack_all(tree, order, copies, work)
            record_database(root, order, copies, sde)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish_database(root)
    got = installed(root)
    want = sorted(f"{p.name}-{p.evr}.{p.arch}" for p in closure.packages)
    if got != want:
        raise RootfsError(f"the tree's rpmdb records {len(got)} packages, the lock {len(want)}: "
                          f"extra {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}")
    return {"skipped_devices": tree.skipped_devices}
