"""The initramfs: busybox, the CernVM-FS client with its libraries, keys, modules and /init — as a
deterministic newc cpio (sorted, fixed mtimes, owner root, sequential inodes), xz-compressed.

Everything in it is named by what it was built from, so the same inputs give the same bytes:
SOURCE_DATE_EPOCH (or 0) is every mtime, and the xz stream uses CRC32 (the kernel's decompressor
rejects CRC64) and a fixed preset.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shlex
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.boot.kernel import KernelParts
from cernvm_build.errors import BootError
from cernvm_build.util.files import atomic_path, source_date_epoch

INIT_SCRIPT = Path(__file__).with_name("init.sh")
DEFAULT_BUSYBOX = Path("/bin/busybox")

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc hook: configure the interface, default route and resolver from the lease
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        echo "$ip via ${router%% *}" > /run/cernvm-ip
        ;;
esac
exit 0
"""


@dataclass
class _Node:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Archive:
    """An in-memory file tree written as a newc cpio; parents are created implicitly."""

    mtime: int = 0
    nodes: dict[str, _Node] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.nodes:
                self.nodes[p] = _Node(stat.S_IFDIR | 0o755)

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        self._parents(path)
        self.nodes[path] = _Node(stat.S_IFDIR | mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self.nodes[path] = _Node(stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self.nodes[path] = _Node(stat.S_IFLNK | 0o777, target.encode())

    def device(self, path: str, kind: int, major: int, minor: int, mode: int = 0o600) -> None:
        path = path.strip("/")
        self._parents(path)
        self.nodes[path] = _Node(kind | mode, rdev=(major, minor))

    def cpio(self) -> bytes:
        out = bytearray()

        def pad() -> None:
            out.extend(b"\0" * (-len(out) % 4))

        def entry(ino: int, name: str, node: _Node) -> None:
            nlink = 2 if stat.S_ISDIR(node.mode) else 1
            fields = (ino, node.mode, 0, 0, nlink, self.mtime, len(node.data), 0, 0, node.rdev[0], node.rdev[1],
                      len(name.encode()) + 1, 0)
            out.extend(b"070701" + "".join(f"{v:08X}" for v in fields).encode())
            out.extend(name.encode() + b"\0")
            pad()
            out.extend(node.data)
            pad()

        for ino, name in enumerate(sorted(self.nodes), start=1):
            entry(ino, name, self.nodes[name])
        entry(0, "TRAILER!!!", _Node(0))
        out.extend(b"\0" * (-len(out) % 512))
        return bytes(out)


def compress_xz(data: bytes) -> bytes:
    """xz with CRC32 and the x86 BCJ filter: both supported by the kernel's initramfs decompressor."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                         filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9}])


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries BINARY loads (ldd), including the dynamic loader, as the paths it will look for."""
    try:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BootError(f"ldd {binary} failed: {getattr(exc, 'stderr', exc)}") from exc
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0]
            if target == "not found" or not target:
                raise BootError(f"{binary} needs {line.split()[0]}, which is not installed")
            libs.append(Path(target))
        elif line.startswith("/"):
            libs.append(Path(line.split(" (")[0]))
    return libs


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths (bin/sh, sbin/switch_root, ...) this busybox provides."""
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BootError(f"{busybox} is not a usable busybox (install busybox-static): {exc}") from exc
    return sorted({line.strip().replace("usr/", "") for line in out.splitlines() if line.strip()})


def _check_static(busybox: Path) -> None:
    head = busybox.read_bytes()[:4096]
    proc = subprocess.run(["ldd", str(busybox)], capture_output=True, text=True)
    if head[:4] != b"\x7fELF" or "not a dynamic executable" not in (proc.stdout + proc.stderr):
        raise BootError(f"{busybox} is not a static busybox (install busybox-static)")


@dataclass
class BootConfig:
    """Defaults baked into the initramfs; the kernel command line can override each."""

    repo_url: str
    tag: str | None = None
    root_hash: str | None = None
    scratch_label: str = "CVMSCRATCH"
    cache_mb: int = 2048
    error_timeout: int = 60
    min_revision: int | None = None      # refuse a repository older than this (cvmfs.min_revision=)
    proxy: str | None = None             # CVMFS_HTTP_PROXY syntax (cvmfs.proxy=); None: DIRECT

    def shell(self, build_id: str, kernel_version: str) -> str:
        values = {"CVMFS_URL": self.repo_url, "CVMFS_TAG": self.tag or "", "CVMFS_ROOT_HASH": self.root_hash or "",
                  "SCRATCH_LABEL": self.scratch_label, "CACHE_MB": str(self.cache_mb),
                  "ERROR_TIMEOUT": str(self.error_timeout), "BUILD_ID": build_id, "KERNEL_VERSION": kernel_version}
        if self.min_revision is not None:   # only when set: ISOs without it keep their bytes
            values["CVMFS_MIN_REVISION"] = str(self.min_revision)
        if self.proxy:                      # likewise
            values["CVMFS_HTTP_PROXY"] = self.proxy
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


@dataclass(frozen=True)
class InitramfsResult:
    path: Path
    sha256: str
    size: int
    uncompressed: int
    files: int


def build_archive(kernel: KernelParts, client: Path, pubkeys: list[Path], config: BootConfig,
                  busybox: Path = DEFAULT_BUSYBOX, mtime: int | None = None,
                  libraries: tuple[tuple[str, Path], ...] | None = None) -> Archive:
    """The initramfs tree (before compression). LIBRARIES: (path in the initramfs, file to read) for
    the client's shared libraries; default: what the host's ldd says."""
    if not pubkeys:
        raise BootError("the initramfs needs at least one master public key")
    _check_static(busybox)
    a = Archive(mtime=source_date_epoch(0) if mtime is None else mtime)
    for d in ("dev", "proc", "sys", "run", "tmp", "mnt/.ro", "mnt/.rw", "newroot", "etc", "root"):
        a.dir(d)
    a.device("dev/console", stat.S_IFCHR, 5, 1)
    a.device("dev/null", stat.S_IFCHR, 1, 3, 0o666)
    a.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet != "bin/busybox":
            a.symlink(applet, "/bin/busybox")
    a.file("sbin/cvmfs-mini", client.read_bytes(), 0o755)
    if libraries is None:
        libraries = tuple((str(lib).lstrip("/"), lib.resolve()) for lib in shared_libraries(client))
    for name, source in libraries:
        a.file(name, source.read_bytes(), 0o755)
    for i, key in enumerate(sorted(pubkeys, key=lambda p: p.name)):
        name = key.name if key.name.endswith(".pub") else f"{key.name}.pub"
        a.file(f"etc/cvmfs/keys/{name}", key.read_bytes())
    for rel, path in kernel.module_files():
        a.file(f"lib/modules/{kernel.version}/{rel}", path.read_bytes())
    a.file("etc/cernvm/modules", "".join(f"{rel}\n" for rel in kernel.modules).encode())
    a.file("etc/cernvm/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    inputs = hashlib.sha256()
    for name in sorted(a.nodes):
        inputs.update(name.encode() + b"\0" + a.nodes[name].data)
    build_id = inputs.hexdigest()[:16]
    a.file("etc/cernvm/boot.conf", config.shell(build_id, kernel.version).encode())
    a.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    return a


def build_initramfs(dest: str | Path, kernel: KernelParts, client: Path, pubkeys: list[Path], config: BootConfig,
                    busybox: Path = DEFAULT_BUSYBOX, mtime: int | None = None,
                    libraries: tuple[tuple[str, Path], ...] | None = None) -> InitramfsResult:
    """Write the compressed initramfs to DEST atomically."""
    a = build_archive(kernel, client, pubkeys, config, busybox, mtime, libraries)
    raw = a.cpio()
    data = compress_xz(raw)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
        os.utime(tmp, (a.mtime, a.mtime))
    return InitramfsResult(Path(dest), hashlib.sha256(data).hexdigest(), len(data), len(raw), len(a.nodes))
