"""A classic *bootable* disk image of a lock or a root tree, through diskimage-builder (issue 16).

`disk-image-create -n vm cernvm-rootfs` with our element (cernvm_build/dib/elements/cernvm-rootfs): DIB
partitions (one MBR partition, ext4), copies the tree in, runs the tree's own GRUB (grub-pc from the lock;
`DIB_SKIP_GRUB_PACKAGE_INSTALL`, nothing fetched) and writes a raw image, which we finish: the MBR disk id
(random in DIB's mbr.py) is set from the tree's identity, and qcow2 is our `qemu-img convert -c`. `-n`
leaves out DIB's `base` element (it needs python3 and DIB's package helpers inside the tree).

What is made deterministic: the ext4 UUID and directory-hash seed (a block-device config derived from the
lock/tree), the MBR disk id, superblock/mkfs times (E2FSPROGS_FAKE_TIME = SOURCE_DATE_EPOCH). What is not
(so two builds have the same file contents but not the same bytes): inode times (ctime/atime of every
file written by `cp -a` onto the mounted file system, and mtimes of what GRUB's grub-install/grub-mkconfig
and DIB write: /boot/grub/*, /etc/default/grub, /etc/fstab), the block and inode layout that copying onto
a mounted ext4 produces (allocation order follows the kernel's allocator and the copy's order), the ext4
journal contents, and GRUB's core.img embedding which follows that layout.

Root stays locked as the tree has it: a login exists only when asked (root_password_hash, crypt(3) form).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import ImageError
from cernvm_build.util.files import atomic_path, sha256_file

FORMATS = ("raw", "qcow2")
ROOT_LABEL = "cloudimg-rootfs"         # DIB's default root label (GRUB finds root=LABEL=...)
KERNEL_PREFIXES = ("linux-image-", "kernel", "kernel-core")
BOOTLOADERS = ("grub-pc", "grub2-pc")  # BIOS GRUB (DIB's block-device-mbr, grub-install --target=i386-pc)
MBR_DISK_ID_OFFSET = 440


@dataclass(frozen=True)
class BootableRequest:
    source: Path                       # a lock (file) or a root tree built by `rootfs --mode install` (directory)
    out: Path
    format: str = "qcow2"
    root_password_hash: str | None = None       # crypt(3) hash for root, e.g. `openssl passwd -6`; None: locked
    cache_dir: Path | None = None               # packages, when SOURCE is a lock (default: the user's cache)
    fetch_options: object | None = None         # store.fetch.FetchOptions (mirrors, offline) for a lock
    image_size_mib: int = 0                     # 0: DIB's own (tree size / 0.6)
    environ: Mapping[str, str] | None = None    # disk-image-create's environment (default os.environ)
    keep_log: Path | None = None                # where to copy DIB's log (always kept on failure)


@dataclass(frozen=True)
class BootableResult:
    path: Path
    format: str
    bytes: int
    allocated_bytes: int
    virtual_bytes: int
    sha256: str
    fs_uuid: str
    seconds: float                              # disk-image-create + our finishing step
    tree_seconds: float = 0.0                   # building the tree from the lock (0 for a tree)
    log: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_dib(environ: Mapping[str, str] | None = None) -> str:
    """disk-image-create on PATH, else beside this interpreter (the venv `pip install '.[dib]'` made)."""
    path = (environ or os.environ).get("PATH")
    found = shutil.which("disk-image-create", path=path)
    if not found:
        beside = Path(sys.executable).parent / "disk-image-create"
        found = str(beside) if os.access(beside, os.X_OK) else None
    if not found:
        raise ImageError("disk-image-create not found: install diskimage-builder "
                         "(pip install 'cernvm-build[dib]'; tools/setup.sh does)")
    return found


def check_lock_bootable(lock: Path) -> None:
    """One-line error unless the lock has a kernel and a BIOS GRUB package."""
    from cernvm_build.lock.lockfile import read_lock

    names = {p.name for p in read_lock(lock).packages}
    if not any(n.startswith(KERNEL_PREFIXES[0]) or n in KERNEL_PREFIXES[1:] for n in names):
        raise ImageError(f"{lock}: no kernel package in the lock (linux-image-* or kernel): "
                         "a bootable image needs one; add e.g. linux-image-amd64 to the recipe")
    if not names & set(BOOTLOADERS):
        raise ImageError(f"{lock}: no bootloader package in the lock ({' or '.join(BOOTLOADERS)}): "
                         "add grub-pc to the recipe (see recipes/debian-bookworm-image.toml)")


def check_tree_bootable(tree: Path) -> None:
    if not any(tree.glob("boot/vmlinuz-*")):
        raise ImageError(f"{tree}: no kernel (boot/vmlinuz-*) in the tree: lock a kernel package")
    if not any(tree.glob("boot/initrd.img-*")) and not any(tree.glob("boot/initramfs-*")):
        raise ImageError(f"{tree}: no initrd (boot/initrd.img-*) in the tree: build it with `rootfs --mode install`")
    if not (tree / "usr/lib/grub/i386-pc").is_dir():
        raise ImageError(f"{tree}: no BIOS GRUB (usr/lib/grub/i386-pc) in the tree: lock grub-pc")


def _identity(source: Path) -> bytes:
    """What the image's UUIDs are derived from: the lock's bytes, or the tree's stat digest."""
    if source.is_file():
        return hashlib.sha256(source.read_bytes()).digest()
    from cernvm_build.rootfs.digest import tree_digest

    return hashlib.sha256(tree_digest(source, mtimes=True).encode()).digest()


def block_device_config(fs_uuid: uuid.UUID, hash_seed: uuid.UUID) -> str:
    """DIB's default single-partition MBR layout (block-device-mbr), with fixed ext4 UUID and hash seed."""
    return f"""- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
        mkfs:
          type: ext4
          label: {ROOT_LABEL}
          uuid: {fs_uuid}
          opts: "-i 4096 -J size=64 -E hash_seed={hash_seed},nodiscard"
          mount:
            mount_point: /
            fstab:
              options: "defaults"
              fsck-passno: 1
"""


def _last_error(log: Path) -> str:
    lines = [ln.split(" | ", 1)[-1].strip() for ln in log.read_text(errors="replace").splitlines()]
    for ln in reversed(lines):
        low = ln.lower()
        if ln and not ln.startswith("+") and ("error" in low or "fail" in low or "cernvm-rootfs:" in low
                                              or "not found" in low or "unbound" in low):
            return ln[:300]
    return next((ln for ln in reversed(lines) if ln), "no output")[:300]


def make_bootable_image(req: BootableRequest) -> BootableResult:
    """REQ.source as a bootable disk image at REQ.out (raw or compressed qcow2), written atomically."""
    source, out = Path(req.source), Path(req.out)
    if req.format not in FORMATS:
        raise ImageError(f"unknown image format {req.format!r} (expected one of {', '.join(FORMATS)})")
    if not source.exists():
        raise ImageError(f"{source}: no such lock or tree")
    if source.is_file():
        check_lock_bootable(source)
    else:
        check_tree_bootable(source)
    if os.geteuid() != 0:
        raise ImageError("a bootable image needs root: diskimage-builder attaches loop devices, partitions "
                         "and mounts them")
    env = dict(os.environ if req.environ is None else req.environ)
    dib = find_dib(env)
    from cernvm_build.dib import ELEMENTS

    out.parent.mkdir(parents=True, exist_ok=True)
    ident = _identity(source)
    fs_uuid = uuid.UUID(bytes=hashlib.sha256(b"ext4-uuid" + ident).digest()[:16], version=4)
    hash_seed = uuid.UUID(bytes=hashlib.sha256(b"ext4-hash-seed" + ident).digest()[:16], version=4)
    disk_id = hashlib.sha256(b"mbr-disk-id" + ident).digest()[:4]
    tree_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work_s:
        work = Path(work_s)
        if source.is_file():
            t0 = time.monotonic()
            tree = work / "tree"
            _tree_from_lock(source, tree, req.cache_dir, req.fetch_options)
            tree_seconds = time.monotonic() - t0
            check_tree_bootable(tree)
        else:
            tree = source
        sde = int(tree.stat().st_mtime)
        log = work / "dib.log"
        env.update({
            "ELEMENTS_PATH": ":".join(p for p in (str(ELEMENTS), env.get("ELEMENTS_PATH", "")) if p),
            "CERNVM_ROOTFS_TREE": str(tree),
            "DIB_BLOCK_DEVICE_CONFIG": block_device_config(fs_uuid, hash_seed),
            "E2FSPROGS_FAKE_TIME": str(sde), "SOURCE_DATE_EPOCH": str(sde),
            "DIB_GRUB_TIMEOUT": env.get("DIB_GRUB_TIMEOUT", "1"),
            "TMPDIR": str(work),
        })
        env.pop("CERNVM_ROOT_PASSWORD_HASH", None)
        if req.root_password_hash:
            env["CERNVM_ROOT_PASSWORD_HASH"] = req.root_password_hash
        cmd = [dib, "-n", "-a", "amd64", "-t", "raw", "-o", str(work / "image")]
        if req.image_size_mib:
            cmd += ["--image-size", f"{req.image_size_mib / 1024:.3f}"]
        cmd += ["vm", "cernvm-rootfs"]
        t0 = time.monotonic()
        with open(log, "wb") as f:
            r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        raw = work / "image.raw"
        kept = req.keep_log
        if r.returncode or not raw.is_file():
            kept = kept or out.with_name(out.name + ".dib.log")
            shutil.copyfile(log, kept)
            raise ImageError(f"disk-image-create failed (exit {r.returncode}): {_last_error(log)} (log: {kept})")
        if kept:
            shutil.copyfile(log, kept)
        with open(raw, "r+b") as f:               # DIB's mbr.py writes a random disk id
            f.seek(MBR_DISK_ID_OFFSET)
            f.write(disk_id)
        virtual = raw.stat().st_size
        with atomic_path(out) as tmp:
            if req.format == "raw":
                os.replace(raw, tmp)
            else:
                from cernvm_build.image.ext4 import _need, _run

                _run([_need("qemu-img"), "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o",
                      "compression_type=zlib", str(raw), str(tmp)])
        seconds = time.monotonic() - t0
    st = out.stat()
    return BootableResult(out, req.format, st.st_size, st.st_blocks * 512, virtual, sha256_file(out),
                          str(fs_uuid), seconds, tree_seconds, kept)


def _tree_from_lock(lock: Path, tree: Path, cache_dir: Path | None, fetch_options) -> None:
    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.rootfs import RootfsOptions, build_rootfs
    from cernvm_build.store.fetch import FetchOptions, fetch_closure, package_paths
    from cernvm_build.util.content_store import ContentStore

    closure = read_lock(lock)
    store = ContentStore.at(cache_dir)
    fetch_closure(closure, store, fetch_options or FetchOptions())
    build_rootfs(closure, tree, package_paths(closure, store), RootfsOptions(mode="install"))
