"""One sha256 over a whole tree: the test of "the same lock gives a bit-identical tree".

Covers, in sorted path order, each entry's type, permission bits, owner, file content, symlink
target, device numbers and file capabilities; mtimes only when asked (they are clamped, but a tree
copied without preserving times should still compare equal by default).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cernvm_build.util.files import sha256_file

_XATTRS = ("security.capability",)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"), (stat.S_ISCHR, "c"),
                       (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s")):
        if test(mode):
            return name
    return "?"


def iter_entries(root: str | Path, mtimes: bool = False):
    """Yield one canonical text line per entry, sorted by path bytes (root itself first, as '.')."""
    root = os.fsencode(str(root))

    def walk(rel: bytes):
        full = os.path.join(root, rel) if rel else root
        st = os.lstat(full)
        mode = st.st_mode
        kind = _kind(mode)
        fields = [rel.decode("utf-8", "surrogateescape") or ".", kind, f"{stat.S_IMODE(mode):04o}",
                  f"{st.st_uid}:{st.st_gid}"]
        if kind == "f":
            fields.append(sha256_file(full))
        elif kind == "l":
            fields.append(os.readlink(full).decode("utf-8", "surrogateescape"))
        elif kind in "cb":
            fields.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
        if kind in "fd":
            for x in _XATTRS:
                try:
                    fields.append(f"{x}={os.getxattr(full, x, follow_symlinks=False).hex()}")
                except OSError:
                    pass
        if mtimes:
            fields.append(str(int(st.st_mtime)))
        yield "\t".join(fields)
        if kind == "d":
            for name in sorted(os.listdir(full)):
                yield from walk(os.path.join(rel, name) if rel else name)

    yield from walk(b"")


def tree_digest(root: str | Path, mtimes: bool = False) -> str:
    h = hashlib.sha256()
    for line in iter_entries(root, mtimes):
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return "sha256:" + h.hexdigest()
