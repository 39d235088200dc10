"""A cheap fingerprint of a whole tree from lstat alone, plus its size: how the pipeline notices that a
root tree it built earlier was changed or replaced, without re-reading gigabytes.

It covers each entry's path, type, mode, owner, size, mtime (ns), device number and symlink target.
An edit changes mtime (rootfs clamps every mtime to SOURCE_DATE_EPOCH, so any later touch shows), a
replaced tree changes sizes or times. It is not the reproducibility check — `tree-digest` (content)
and the CernVM-FS root hash are.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeStat:
    digest: str          # "stat:<sha256>"
    entries: int
    files: int
    bytes: int           # sum of regular file sizes (hard links counted once)


def tree_stat(root: str | Path) -> TreeStat:
    h = hashlib.sha256()
    entries = files = total = 0
    seen: set[tuple[int, int]] = set()
    base = os.fsencode(str(root))

    def walk(rel: bytes) -> None:
        nonlocal entries, files, total
        full = os.path.join(base, rel) if rel else base
        st = os.lstat(full)
        entries += 1
        mode = st.st_mode
        extra = b""
        if stat.S_ISREG(mode):
            files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
        elif stat.S_ISLNK(mode):
            extra = os.readlink(full)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            extra = str(st.st_rdev).encode()
        size = st.st_size if not stat.S_ISDIR(mode) else 0
        h.update(b"%s\0%o\0%d:%d\0%d\0%d\0%s\n" % (rel or b".", mode, st.st_uid, st.st_gid, size,
                                                 st.st_mtime_ns, extra))
        if stat.S_ISDIR(mode):
            for name in sorted(os.listdir(full)):
                walk(os.path.join(rel, name) if rel else name)

    walk(b"")
    return TreeStat("stat:" + h.hexdigest(), entries, files, total)
