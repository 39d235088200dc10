"""What libsolv's Debian parser does not keep, kept beside its .solv cache.

libsolv drops Priority, Essential/Important and the download Size, and its .solv writer reorders
dependencies, yet apt's choices depend on all of them (field order of or-groups, Priority of
providers). This side table is built once per verified Packages file with apt's own fast parser and
stored as flat arrays aligned with the stanzas, so loading it costs about a millisecond.

It also keeps the dependency graph by name (the Package, Provides, Pre-Depends and Depends names of
every stanza), which lets a lock load into libsolv only the stanzas its request can reach
(formats/deb/universe.py, add_needed) instead of the whole archive.
"""

from __future__ import annotations

import mmap
import os
import re
from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, compress, repeat
from operator import and_, lshift, or_, rshift, sub
from zlib import crc32
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import MetadataError
from cernvm_build.util.files import atomic_write

MAGIC = b"cvb-debindex-4\n"
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
    graph: NameGraph | None = None
    _fd: int | None = None

    def _chunk(self, i: int) -> bytes:
        """The raw bytes of the i-th stanza: one pread, its extent is known from the next offset."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        start = self.offset[i]
        end = self.offset[i + 1] if i + 1 < len(self.offset) else self.end
        return os.pread(self._fd, end - start, start)

    def package_name(self, i: int) -> str:
        assert self.graph is not None
        return self.graph.package(i).decode()

    def dep_fields(self, i: int) -> dict[str, str]:
        """Only Pre-Depends, Depends and Recommends of the i-th package (the fields apt's walk reads),
        by apt's own parser of one stanza."""
        import apt_pkg

        section = apt_pkg.TagSection(self._chunk(i))
        out = {}
        for key in ("Pre-Depends", "Depends", "Recommends"):
            value = section.get(key)
            if value:
                out[key] = value.replace("\n", " ")
        return out


def name_hash(name: bytes) -> int:
    """A name's number in every NameGraph: its CRC-32. Two names may share one (about one pair in
    an archive): then each reaches the other's providers too, which only adds packages that the
    solver can never need, so reachability stays a superset of what matters."""
    return crc32(name)


@dataclass
class NameGraph:
    """Who provides and who needs which name, by stanza position, names numbered by name_hash (the
    same in every index, so reachability crosses indexes without looking names up): CSR arrays give
    each stanza's Pre-Depends/Depends names; (name, stanza) pairs sorted by name give the providers
    (the stanzas a name is the Package or a Provides of)."""

    packages: bytes       # the Package names, concatenated: stanza i's is packages[pkg_start[i]:pkg_start[i + 1]]
    pkg_start: array
    dep_start: array      # stanza i needs names dep_names[dep_start[i]:dep_start[i + 1]]
    dep_names: array
    prov_names: array     # sorted
    prov_stanzas: array   # prov_stanzas[k] provides prov_names[k]

    def package(self, i: int) -> bytes:
        return self.packages[self.pkg_start[i]:self.pkg_start[i + 1]]

    def providers(self, name: int) -> array:
        return self.prov_stanzas[bisect_left(self.prov_names, name):bisect_right(self.prov_names, name)]

    def needs(self, i: int) -> array:
        return self.dep_names[self.dep_start[i]:self.dep_start[i + 1]]

    def arrays(self) -> tuple[array, ...]:
        return (self.pkg_start, self.dep_start, self.dep_names, self.prov_names, self.prov_stanzas)

    @classmethod
    def build(cls, packages: list[str], provides: list[str], depends: list[str]) -> "NameGraph":
        """From the Package, Provides and Pre-Depends + Depends fields of every stanza ("" when
        absent). Done in a few passes over all stanzas at once (one regular expression, map, sort):
        it runs in every cold `lock`, on ~60,000 stanzas."""
        encoded = [p.encode() for p in packages]
        pkg_start = array("i", [0])
        pkg_start.extend(accumulate(map(len, encoded)))
        dep_tokens = _field_names(depends)
        dep_ends = _ends(dep_tokens)
        dep_names = array("I", map(crc32, filter(_END.__ne__, dep_tokens)))     # name_hash, in bulk
        dep_start = array("i", [0])
        dep_start.extend(map(sub, dep_ends, range(len(dep_ends))))      # names before each end
        prov_tokens = _field_names(provides)
        prov_stanza = accumulate(map(_END.__eq__, prov_tokens), initial=0)   # stanza of each token
        # each (name, stanza) pair as one int, name << 32 | stanza: sorted, they are the providers' table
        own = map(or_, map(lshift, map(crc32, encoded), repeat(32)), range(len(encoded)))
        provided = map(or_, map(lshift, map(crc32, prov_tokens), repeat(32)), prov_stanza)
        codes = sorted(set(own).union(compress(provided, map(_END.__ne__, prov_tokens))))
        return cls(b"".join(encoded), pkg_start, dep_start, dep_names,
                   array("I", map(rshift, codes, repeat(32))), array("i", map(and_, codes, repeat(0xFFFFFFFF))))


_END = b"\x00"
# a name (its ":any" or ":amd64" qualifier dropped) or the end of a stanza's field; what a field says
# besides names (versions "(>= 1)", architecture lists "[amd64]", build profiles "<!nocheck>") matches
# with an empty group (compiled on first use, by re's cache: only a cold run needs it)
_NAME_OR_END = rb"(\x00|[^\s,|:\x00(\[<]+)(?::[^\s,|\x00(\[<]*)?|\([^)]*\)|\[[^\]]*\]|<[^>]*>"


def _field_names(fields: list[str]) -> list[bytes]:
    """The names each field mentions, every field's followed by _END (one list for all stanzas)."""
    return list(filter(None, re.findall(_NAME_OR_END, ("\x00".join(fields) + "\x00").encode())))


def _ends(tokens: list[bytes]) -> list[int]:
    return list(compress(range(len(tokens)), map(_END.__eq__, tokens)))


def build(packages: Path) -> tuple[DebIndex, list[tuple[str, str, str]]]:
    """Scan a Packages file with apt_pkg's parser; returns the index and (name, version, arch) per stanza."""
    return _without_gc(_build, packages)


def _build(packages: Path) -> tuple[DebIndex, list[tuple[str, str, str]]]:
    import apt_pkg

    apt_pkg.init_config()
    offset, size, prio, flags = array("q"), array("q"), array("b"), array("b")
    ids: list[tuple[str, str, str]] = []
    provides: list[str] = []
    depends: list[str] = []
    tf = apt_pkg.TagFile(str(packages))
    off = tf.offset()
    for sec in tf:
        g = sec.get
        name = g("Package")
        if not name:
            off = tf.offset()
            continue
        ids.append((name, g("Version", ""), g("Architecture", "")))
        pre, dep = g("Pre-Depends", ""), g("Depends", "")
        provides.append(g("Provides", ""))
        depends.append(f"{pre},{dep}" if pre and dep else pre or dep)
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
    return DebIndex(packages, offset, size, prio, flags, end=packages.stat().st_size,
                    graph=NameGraph.build([n for n, _, _ in ids], provides, depends)), ids


def _without_gc(f, *args):
    """F(*ARGS) with the cyclic garbage collector paused: building a side index makes millions of
    objects that form no cycles, and would otherwise trigger dozens of collections."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return f(*args)
    finally:
        if enabled:
            gc.enable()


def _blob(data: bytes) -> list[bytes]:
    return [len(data).to_bytes(8, "little"), data]


def save(index: DebIndex, dest: Path) -> None:
    n = len(index.offset)
    if len(index.name_rank) != n or index.graph is None:
        raise MetadataError(f"{dest}: side index without name ranks or name graph")
    parts = [MAGIC, n.to_bytes(8, "little"), index.offset.tobytes(), index.size.tobytes(),
             index.priority.tobytes(), index.flags.tobytes(), index.name_rank.tobytes()]
    for blob in (index.graph.packages, *(a.tobytes() for a in index.graph.arrays())):
        parts += _blob(blob)
    atomic_write(dest, b"".join(parts))


def load(path: Path, packages: Path) -> DebIndex:
    """Read a side index without reading it: its arrays are views of the mapped file (typed
    memoryviews index like arrays), so a lock touches only the pages of the entries it uses."""
    with open(path, "rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    if data[:len(MAGIC)] != MAGIC:
        raise MetadataError(f"{path}: not a cernvm-build Debian side index")
    pos = len(MAGIC)
    n = int.from_bytes(data[pos:pos + 8], "little")
    pos += 8
    try:
        arrays = []
        for code, width in (("q", 8), ("q", 8), ("b", 1), ("b", 1), ("q", 8)):
            arrays.append(data[pos:pos + n * width].cast(code))
            pos += n * width
        blobs = []
        for _ in range(6):
            size = int.from_bytes(data[pos:pos + 8], "little")
            blobs.append(data[pos + 8:pos + 8 + size])
            pos += 8 + size
        graph = NameGraph(blobs[0].tobytes(), *(blob.cast(code) for code, blob in zip("iiIIi", blobs[1:])))
    except (TypeError, ValueError) as exc:      # a length that is no whole number of items: damaged
        raise MetadataError(f"{path}: damaged Debian side index") from exc
    if (pos != len(data) or any(len(a) != n for a in arrays) or len(graph.pkg_start) != n + 1
            or len(graph.dep_start) != n + 1 or graph.pkg_start[-1] != len(graph.packages)
            or len(graph.prov_names) != len(graph.prov_stanzas)):
        raise MetadataError(f"{path}: truncated or inconsistent Debian side index")
    return DebIndex(packages, *arrays, end=packages.stat().st_size, graph=graph)
