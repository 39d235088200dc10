"""The boot kernel: vmlinuz and the few modules the initramfs needs, taken from the lock's kernel package.

The kernel comes from the same closure as the snapshot, so the modules in the snapshot's /lib/modules
match the running kernel after switch_root. Debian's kernel package carries no modules.dep (depmod
runs at install time), so dependencies are read from each module's own `.modinfo` section
(`depends=`) and resolved here; built-in drivers (modules.builtin) need nothing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cernvm_build import formats
from cernvm_build.errors import BootError
from cernvm_build.lock.lockfile import Closure, LockedPackage
from cernvm_build.store.fetch import FetchOptions, fetch_closure
from cernvm_build.util.content_store import ContentStore, copy_verified, default_cache_dir
from cernvm_build.util.files import atomic_dir

# What a VM needs to reach the repository and build the root: NICs, disks, FUSE, overlay, ext4.
DEFAULT_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "sd_mod", "e1000", "e1000e",
                   "fuse", "overlay", "ext4", "crc32c_generic", "af_packet")
_KERNEL_PKG = re.compile(r"^linux-image-\d.*")


def norm(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class KernelParts:
    """vmlinuz plus modules in load order (dependencies first), as files in a cache directory."""

    package: str
    version: str  # the `uname -r` string, e.g. 6.1.0-50-amd64
    vmlinuz: Path
    root: Path  # <root>/<relpath> for every module
    modules: tuple[str, ...]  # relpaths below lib/modules/<version>/, load order
    builtin: tuple[str, ...]  # requested names that are built into the kernel

    def module_files(self) -> list[tuple[str, Path]]:
        return [(rel, self.root / rel) for rel in self.modules]


def find_kernel_package(closure: Closure, name: str | None = None) -> LockedPackage:
    """The versioned kernel image package of a lock (linux-image-6.1.0-50-amd64, not the meta package)."""
    if name:
        pkg = closure.package(name)
        if pkg is None:
            raise BootError(f"lock {closure.name} has no package {name}")
        return pkg
    found = [p for p in closure.packages if _KERNEL_PKG.match(p.name)]
    if len(found) != 1:
        raise BootError(f"lock {closure.name} has {len(found)} versioned kernel packages "
                        f"({', '.join(p.name for p in found) or 'none'}); add exactly one linux-image-* "
                        "to the boot recipe or name it with --kernel-package")
    return found[0]


def modinfo_depends(data: bytes) -> list[str]:
    """`depends=` of a kernel module, read from the ELF64 `.modinfo` section."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise BootError("kernel module is not an ELF64 object")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize)
        return name, off, size

    _, stroff, _ = section(e_shstrndx)
    for i in range(e_shnum):
        name, off, size = section(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end] == b".modinfo":
            for field in data[off:off + size].split(b"\0"):
                if field.startswith(b"depends="):
                    return [norm(d) for d in field[8:].decode().split(",") if d]
            return []
    return []


def resolve_modules(moddir: Path, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(relpaths in load order, wanted names that are built in); unknown names are an error."""
    by_name: dict[str, str] = {}
    for ko in sorted(moddir.rglob("*.ko")):
        by_name.setdefault(norm(ko.name[:-3]), str(ko.relative_to(moddir)))
    builtin_file = moddir / "modules.builtin"
    builtin = {norm(Path(line.strip()).name.removesuffix(".ko"))
               for line in (builtin_file.read_text().splitlines() if builtin_file.exists() else []) if line.strip()}
    order: list[str] = []
    done: set[str] = set()
    builtins: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in stack:
            raise BootError(f"kernel module dependency cycle: {' -> '.join(stack + (name,))}")
        if name not in by_name:
            if name in builtin:
                done.add(name)
                if not stack:
                    builtins.append(name)
                return
            raise BootError(f"kernel has no module or built-in driver named {name}")
        for dep in modinfo_depends((moddir / by_name[name]).read_bytes()):
            visit(dep, stack + (name,))
        done.add(name)
        order.append(by_name[name])

    for w in wanted:
        visit(norm(w), ())
    return order, builtins


def kernel_parts(closure: Closure, modules: tuple[str, ...] = DEFAULT_MODULES, *,
                 cache_root: str | Path | None = None, kernel_package: str | None = None,
                 fetch_options: FetchOptions | None = None) -> KernelParts:
    """Fetch the lock's kernel package (verified against the lock) and cut out vmlinuz + modules.

    The result is cached by package digest and module list, so the 70 MB package is unpacked once; it
    is sealed (util.content_store) and checked file by file on every use, so a cache writer cannot
    swap the kernel an ISO boots.
    """
    root = Path(cache_root or default_cache_dir())
    fmt = formats.get(closure.flavour, BootError, f"lock {closure.name}")
    pkg = find_kernel_package(closure, kernel_package)
    key = hashlib.sha256(f"{pkg.sha256}\0{','.join(sorted(set(map(norm, modules))))}".encode()).hexdigest()[:24]
    out = root / "boot" / "kernel" / key
    store = ContentStore(root)
    # the cut-out kernel is used only while it is exactly what was cut from the verified package
    if not ((out / "complete").exists() and store.tree_intact(f"kernel:{key}", out)):
        fetch_closure(closure, store, fetch_options, packages=[pkg])
        shutil.rmtree(out, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="kernel-", dir=root) as tmp:
            fmt.extract(copy_verified(store.package(pkg.sha256), pkg, Path(tmp) / "package"), Path(tmp) / "x")
            images = sorted((Path(tmp) / "x" / "boot").glob("vmlinuz-*"))
            if len(images) != 1:
                raise BootError(f"package {pkg.name} has {len(images)} /boot/vmlinuz-* images, expected one")
            version = images[0].name.removeprefix("vmlinuz-")
            moddir = Path(tmp) / "x" / "lib" / "modules" / version
            if not moddir.is_dir():
                moddir = Path(tmp) / "x" / "usr" / "lib" / "modules" / version
            order, builtins = resolve_modules(moddir, list(modules))
            with atomic_dir(out) as staging:
                shutil.copyfile(images[0], staging / "vmlinuz")
                for rel in order:
                    (staging / "modules" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(moddir / rel, staging / "modules" / rel)
                (staging / "load-order").write_text("".join(f"{r}\n" for r in order))
                (staging / "builtin").write_text("".join(f"{b}\n" for b in builtins))
                (staging / "version").write_text(f"{version}\n{pkg.name}\n")
                (staging / "complete").write_text("")
            store.seal_tree(f"kernel:{key}", out)
    version, package = (out / "version").read_text().split()
    return KernelParts(package=package, version=version, vmlinuz=out / "vmlinuz", root=out / "modules",
                       modules=tuple((out / "load-order").read_text().split()),
                       builtin=tuple((out / "builtin").read_text().split()))
