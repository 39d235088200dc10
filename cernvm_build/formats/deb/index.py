"""What libsolv's Debian parser does not keep, kept beside its .solv cache.

libsolv drops Priority, Essential/Important and the download Size, and its .solv writer reorders
dependencies, yet apt's choices depend on all of them (field order of or-groups, Priority of
providers). This side table is built once per verified Packages file with apt's own fast parser and
stored as flat arrays aligned with the solvables, so loading it costs microseconds.
"""

from __future__ import annotations

import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import MetadataError
from cernvm_build.util.files import atomic_write

MAGIC = b"cvb-debindex-3\n"
_DEP_FIELD = re.compile(rb"^(Pre-Depends|Depends|Recommends):[ \t]*(.*(?:\n[ \t].*)*)", re.M)
PRIORITY = {"required": 1, "important": 2, "standard": 3, "optional": 4, "extra": 5}
ESSENTIAL, IMPORTANT, FORCED = 1, 2, 4
# apt force-marks itself essential and important (pkgCacheGen::ForceEssential defaults to "apt")
FORCE_ESSENTIAL = {"apt"}


@dataclass
class DebIndex:
    """Per-stanza data in Packages file order (index i is the i-th solvable of the repo)."""

    path: Path
    offset: array     # byte offset of the stanza
    size: array       # Size: (download size)
    priority: array   # apt's numbering; 0 when the field is absent (apt sorts those first)
    flags: array      # ESSENTIAL | IMPORTANT | FORCED (apt treats FORCED as both)
    name_rank: array = field(default_factory=lambda: array("q"))   # first mention of the name in the file
    end: int = 0      # file size (extent of the last stanza)
    _fd: int | None = None

    def _chunk(self, i: int) -> bytes:
        """The raw bytes of the i-th stanza: one pread, its extent is known from the next offset."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        start = self.offset[i]
        end = self.offset[i + 1] if i + 1 < len(self.offset) else self.end
        return os.pread(self._fd, end - start, start)

    def dep_fields(self, i: int) -> dict[str, str]:
        """Only Pre-Depends, Depends and Recommends of the i-th package (the fields apt's walk reads)."""
        chunk = self._chunk(i)
        out = {}
        for m in _DEP_FIELD.finditer(chunk):
            out[m.group(1).decode()] = m.group(2).decode("utf-8", errors="replace").replace("\n", " ")
        return out


def build(packages: Path) -> tuple[DebIndex, list[tuple[str, str, str]]]:
    """Scan a Packages file with apt_pkg's parser; returns the index and (name, version, arch) per stanza."""
    import apt_pkg

    apt_pkg.init_config()
    offset, size, prio, flags = array("q"), array("q"), array("b"), array("b")
    ids: list[tuple[str, str, str]] = []
    tf = apt_pkg.TagFile(str(packages))
    off = tf.offset()
    for sec in tf:
        g = sec.get
        name = g("Package")
        if not name:
            off = tf.offset()
            continue
        ids.append((name, g("Version", ""), g("Architecture", "")))
        offset.append(off)
        try:
            size.append(int(g("Size") or 0))
        except ValueError:
            size.append(0)
        p = g("Priority")
        prio.append(0 if p is None else PRIORITY.get(p.lower(), 5))
        f = 0
        if (g("Essential") or "").lower() == "yes":
            f |= ESSENTIAL
        if name in FORCE_ESSENTIAL:
            f |= FORCED
        if (g("Important") or "").lower() == "yes" or (g("Protected") or "").lower() == "yes":
            f |= IMPORTANT
        flags.append(f)
        off = tf.offset()
    return DebIndex(packages, offset, size, prio, flags, end=packages.stat().st_size), ids


def save(index: DebIndex, dest: Path) -> None:
    n = len(index.offset)
    if len(index.name_rank) != n:
        raise MetadataError(f"{dest}: side index without name ranks")
    parts = [MAGIC, n.to_bytes(8, "little"), index.offset.tobytes(), index.size.tobytes(),
             index.priority.tobytes(), index.flags.tobytes(), index.name_rank.tobytes()]
    atomic_write(dest, b"".join(parts))


def load(path: Path, packages: Path) -> DebIndex:
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise MetadataError(f"{path}: not a cernvm-build Debian side index")
    pos = len(MAGIC)
    n = int.from_bytes(data[pos:pos + 8], "little")
    pos += 8
    arrays = []
    for code, width in (("q", 8), ("q", 8), ("b", 1), ("b", 1), ("q", 8)):
        a = array(code)
        a.frombytes(data[pos:pos + n * width])
        pos += n * width
        arrays.append(a)
    return DebIndex(packages, *arrays, end=packages.stat().st_size)
