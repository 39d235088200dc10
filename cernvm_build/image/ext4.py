"""A classic full-filesystem image of a root tree (ext4, raw or qcow2): the yardstick micro-CernVM is
measured against — the same closure shipped as one disk image instead of ISO + CernVM-FS objects.

Deterministic: `mkfs.ext4 -d TREE` with a UUID and directory-hash seed derived from the tree's
content digest, superblock/lost+found times from E2FSPROGS_FAKE_TIME, and — because e2fsprogs 1.47.0
copies each source inode's atime and ctime, which no one can set on the source — every inode's
atime and ctime rewritten to SOURCE_DATE_EPOCH with one debugfs script. `e2fsck -fn` checks the
result. qcow2 comes from `qemu-img convert -c` (zlib, deterministic for the same raw input).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.errors import ImageError
from cernvm_build.util.files import atomic_path, sha256_file

FORMATS = ("raw", "qcow2")
MIB = 1 << 20


@dataclass(frozen=True)
class ImageOptions:
    format: str = "qcow2"
    size_mib: int = 0        # 0: from the tree (used blocks + inodes + journal + 20 %)
    sde: int = 0             # timestamps written into the file system
    label: str = "rootfs"


@dataclass(frozen=True)
class ImageResult:
    path: Path
    format: str
    bytes: int               # file size (apparent)
    allocated_bytes: int     # blocks actually allocated (raw images are sparse)
    virtual_bytes: int       # disk size seen by a machine
    sha256: str
    tree_bytes: int


def _need(tool: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)),
                                      None)
    if not path:
        raise ImageError(f"{tool} not found (Debian: apt-get install "
                         f"{'qemu-utils' if tool == 'qemu-img' else 'e2fsprogs'})")
    return path


def _run(cmd: list[str], env: dict | None = None, stdin: bytes | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, env=env, input=stdin)
    if r.returncode:
        msg = (r.stderr or r.stdout).decode(errors="replace").strip().splitlines()
        raise ImageError(f"{os.path.basename(cmd[0])} failed (exit {r.returncode}): {msg[-1] if msg else ''}")
    return r.stdout.decode(errors="replace")


def _walk(root: Path) -> tuple[list[str], int, int]:
    """Sorted paths relative to ROOT ('/'-rooted), blocks used, inode count."""
    paths, blocks, seen = ["/"], 1, set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = "/" + os.path.relpath(dirpath, root) if dirpath != str(root) else ""
        for name in sorted(filenames + dirnames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            paths.append(f"{rel}/{name}")
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            blocks += (st.st_size + 4095) // 4096 + 1
    return paths, blocks, len(paths)


def _seed(root: Path, paths: list[str]) -> uuid.UUID:
    """A UUID from the tree's path names: same tree, same UUID; no randomness in the image."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return uuid.UUID(bytes=h.digest()[:16], version=4)


def _debugfs_quote(path: str) -> str | None:
    """debugfs (ss_parse) quoting: inside double quotes only '"' is special, written '""'."""
    if "\n" in path:
        return None
    return '"' + path.replace('"', '""') + '"'


def make_ext4(tree: Path, out: Path, options: ImageOptions) -> int:
    """Write a raw ext4 image of TREE to OUT; returns the tree's data bytes."""
    mkfs, debugfs, e2fsck = _need("mkfs.ext4"), _need("debugfs"), _need("e2fsck")
    paths, blocks, inodes = _walk(tree)
    data_bytes = blocks * 4096
    size = options.size_mib * MIB
    if not size:
        need = data_bytes + inodes * 256 + 64 * MIB     # inode tables, journal (64 MiB above 1 GiB)
        size = max(64 * MIB, (int(need * 1.2) + MIB - 1) // MIB * MIB)
    sde = options.sde or int(tree.stat().st_mtime)     # 0: the tree's own (clamped) root mtime
    fs_uuid = _seed(tree, paths)
    hash_seed = uuid.UUID(bytes=hashlib.sha256(fs_uuid.bytes).digest()[:16], version=4)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(sde), "SOURCE_DATE_EPOCH": str(sde),
           "MKE2FS_CONFIG": "/etc/mke2fs.conf", "LC_ALL": "C"}
    with open(out, "wb") as f:
        f.truncate(size)
    _run([mkfs, "-q", "-F", "-t", "ext4", "-d", str(tree), "-L", options.label, "-U", str(fs_uuid),
          "-N", str(inodes + 1024),
          "-E", f"hash_seed={hash_seed},root_owner=0:0,nodiscard,lazy_itable_init=0,lazy_journal_init=0",
          str(out)], env=env)
    script = []
    for p in paths:
        q = _debugfs_quote(p)
        if q is None:
            raise ImageError(f"{tree}{p!r}: a path with a newline cannot be fixed up by debugfs")
        script.append(f"sif {q} atime {sde}\nsif {q} ctime {sde}\n")
    r = subprocess.run([debugfs, "-w", "-f", "-", str(out)], env=env, input="".join(script).encode(),
                       capture_output=True)
    problems = [line for line in r.stderr.decode(errors="replace").splitlines()
                if line.strip() and not line.startswith("debugfs ")]
    if r.returncode or problems:
        raise ImageError(f"debugfs could not set inode times in {out}: {(problems or ['exit %d' % r.returncode])[0]}")
    _run([e2fsck, "-fn", str(out)], env=env)
    return data_bytes


def make_image(tree: str | Path, out: str | Path, options: ImageOptions | None = None) -> ImageResult:
    """TREE as an ext4 file system image at OUT (raw or compressed qcow2), written atomically."""
    options = options or ImageOptions()
    tree, out = Path(tree), Path(out)
    if options.format not in FORMATS:
        raise ImageError(f"unknown image format {options.format!r} (expected one of {', '.join(FORMATS)})")
    if not tree.is_dir():
        raise ImageError(f"{tree} is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if options.format == "raw":
            tree_bytes = make_ext4(tree, tmp, options)
            virtual = tmp.stat().st_size
        else:
            with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
                raw = Path(work) / "image.raw"
                tree_bytes = make_ext4(tree, raw, options)
                virtual = raw.stat().st_size
                _run([_need("qemu-img"), "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o",
                      "compression_type=zlib", str(raw), str(tmp)])
    st = out.stat()
    return ImageResult(out, options.format, st.st_size, st.st_blocks * 512, virtual, sha256_file(out), tree_bytes)
