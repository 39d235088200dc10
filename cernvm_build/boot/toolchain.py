"""What the initramfs runs, taken from a lock instead of the build host.

By default the boot client is compiled by the host's gcc against the host's libraries, and busybox and
those libraries are copied from the host: the ISO then depends on the machine (and the day: libssl3
takes security updates). With a *client lock* (recipes/boot-client.toml: busybox-static, the client's
runtime libraries and gcc + -dev packages) the whole user space of the initramfs is a function of
locks and source: the lock's packages are fetched and verified, unpacked into a cached tree, the
client is compiled in a chroot of that tree, and busybox, the loader and every library the client
needs are read from the tree. Compiling in the chroot needs root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cernvm_build.boot import client as client_mod
from cernvm_build.boot.initramfs import DEFAULT_BUSYBOX, shared_libraries
from cernvm_build.errors import BootError
from cernvm_build.lock.lockfile import read_lock
from cernvm_build.store.fetch import FetchOptions, fetch_closure, package_paths
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.files import atomic_path

LOADER = "/lib64/ld-linux-x86-64.so.2"
TOOLS_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"}


@dataclass(frozen=True)
class UserSpace:
    """The initramfs's programs: the client, its libraries (initramfs path, file to read), busybox."""

    client: Path
    libraries: tuple[tuple[str, Path], ...]
    busybox: Path
    origin: str                       # "host" or "lock sha256:..."


def from_host(cache_root: Path, busybox: Path = DEFAULT_BUSYBOX) -> UserSpace:
    binary = client_mod.build_client(cache_root)
    libs = tuple((str(lib).lstrip("/"), lib.resolve()) for lib in shared_libraries(binary))
    return UserSpace(binary, libs, busybox, "host")


def _tree(lock: Path, cache_root: Path, fetch_options: FetchOptions | None) -> tuple[Path, str]:
    """The client lock unpacked once into the cache (keyed by the lock's digest)."""
    from cernvm_build.rootfs import RootfsOptions, build_rootfs

    data = lock.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    tree = cache_root / "boot" / "toolchain" / digest[:24]
    store = ContentStore(cache_root)
    # the compiler, busybox and libraries the ISO takes from this tree: used only as sealed when built
    if not ((tree / ".complete").exists() and store.tree_intact(f"toolchain:{digest}", tree)):
        closure = read_lock(lock)
        fetch_closure(closure, store, fetch_options)
        shutil.rmtree(tree, ignore_errors=True)
        build_rootfs(closure, tree, package_paths(closure, store), RootfsOptions(mode="unpack"))
        (tree / ".complete").write_text(f"{lock.name} sha256:{digest}\n")
        store.seal_tree(f"toolchain:{digest}", tree)
    return tree, digest


def _in_tree(tree: Path, path: str) -> Path:
    """PATH resolved as inside a chroot of TREE (absolute symlinks restart at the tree's root), so the
    result never leaves the tree; it must be a regular file."""
    from cernvm_build.rootfs.safety import MAX_SYMLINKS, SafeTree

    safe = SafeTree(tree, as_root=False)
    parts = tuple(c for c in PurePosixPath(path).parts if c != "/")
    for _ in range(MAX_SYMLINKS):
        parent = safe.resolve_dir(parts[:-1], f"{path} in the client tree", create=False, chroot=True)
        leaf = parent / parts[-1]
        if not leaf.is_symlink():
            break
        target = os.readlink(leaf)
        base = () if target.startswith("/") else parent.relative_to(tree).parts
        parts = base + tuple(c for c in PurePosixPath(target).parts if c != "/")
    else:
        raise BootError(f"{path} in the client tree: too many symlinks")
    if not leaf.is_file():
        raise BootError(f"{path} is not a file in the client tree {tree}")
    return leaf


def _workdir(tree: Path, prefix: str) -> Path:
    """A fresh directory inside the tree for one chroot job (ours: never a path a package shipped)."""
    base = tree / ".cernvm-build-work"
    if base.is_symlink() or (base.exists() and not base.is_dir()):
        raise BootError(f"{base}: exists and is not our work directory")
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _chroot(tree: Path, *argv: str, what: str) -> str:
    if os.geteuid() != 0:
        raise BootError(f"{what}: compiling the boot client from a client lock runs chroot and needs root "
                        "(or build the ISO without --client-lock, with the host's toolchain)")
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    proc = subprocess.run([chroot, str(tree), *argv], capture_output=True, text=True, env=TOOLS_ENV)
    if proc.returncode != 0:
        raise BootError(f"{what} failed in the client tree: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return proc.stdout


def from_lock(lock: Path, cache_root: Path, fetch_options: FetchOptions | None = None) -> UserSpace:
    """Client, libraries and busybox all from LOCK's packages (compiled in a chroot of its tree)."""
    tree, digest = _tree(Path(lock), cache_root, fetch_options)
    gcc = next((g for g in ("usr/bin/gcc", "usr/bin/gcc-12") if (tree / g).exists()), None)
    if gcc is None or not (tree / LOADER.lstrip("/")).exists():
        raise BootError(f"{lock}: the client lock has no gcc or no C library (see recipes/boot-client.toml)")
    source = client_mod.SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([digest.encode(), source, " ".join(client_mod.CFLAGS).encode()])).hexdigest()
    dest = cache_root / "boot" / "client-from-lock" / key[:32] / client_mod.BINARY_NAME
    if not (dest.is_file() and ContentStore(cache_root).trusted(dest)):
        flags = _chroot(tree, "/usr/bin/pkg-config", "--cflags", "--libs", *client_mod.PKG_CONFIG_PACKAGES,
                        what="pkg-config").split()
        work = _workdir(tree, "build-")
        try:
            (work / "cvmfs-mini.c").write_bytes(source)
            inner = "/" + str(work.relative_to(tree))
            _chroot(tree, f"/{gcc}", *client_mod.CFLAGS, "-s", "-o", f"{inner}/out", f"{inner}/cvmfs-mini.c",
                    *flags, what="compiling cvmfs-mini")
            with atomic_path(dest, 0o755) as tmp:
                shutil.copyfile(work / "out", tmp)
            ContentStore(cache_root).remember(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # the loader lists what the client needs, as the tree's own libc resolves it
    probe = _workdir(tree, "probe-")
    try:
        shutil.copyfile(dest, probe / "cvmfs-mini")
        os.chmod(probe / "cvmfs-mini", 0o755)
        listing = _chroot(tree, LOADER, "--list", "/" + str(probe.relative_to(tree) / "cvmfs-mini"),
                          what="listing the client's libraries")
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    libs = []
    for line in listing.splitlines():
        line = line.strip()
        path = line.split("=>", 1)[1].strip().split(" (")[0] if "=>" in line else line.split(" (")[0]
        if not path.startswith("/"):
            if "not found" in line:
                raise BootError(f"{lock}: the client needs {line.split()[0]}, which the client lock lacks")
            continue
        libs.append((path.lstrip("/"), _in_tree(tree, path)))
    busybox = _in_tree(tree, "/bin/busybox")
    return UserSpace(dest, tuple(libs), busybox, f"lock sha256:{digest}")
