"""File catalogs: SQLite databases at schema 2.5 revision 7 — writer, reader and statistics counters.

A catalog row is keyed by the MD5 of the entry's absolute repository path (root = ""), split into two
little-endian signed 64-bit integers. Rows are written in sorted path order so the same tree gives
the same database bytes (and so the same catalog hash), which is what makes republishing an unchanged
subtree free: its catalog is recognised and its previous object reused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.cvmfs.database import new_database
from cernvm_build.cvmfs.objects import Chunk
from cernvm_build.errors import CvmfsIntegrityError

SCHEMA = "2.5"
SCHEMA_REVISION = 7

# flags
FLAG_DIR = 1
FLAG_DIR_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_FILE_SPECIAL = 16
FLAG_DIR_NESTED_ROOT = 32
FLAG_FILE_CHUNK = 64
FLAG_FILE_EXTERNAL = 128
FLAG_HASH_SHIFT = 8
FLAG_HASH_MASK = 0x7 << 8
FLAG_COMPRESSION_SHIFT = 11
FLAG_COMPRESSION_MASK = 0x7 << 11
FLAG_DIR_BIND_MOUNTPOINT = 0x4000
FLAG_HIDDEN = 0x8000
FLAG_DIRECT_IO = 0x10000

COUNTER_NAMES = ("regular", "symlink", "special", "dir", "nested", "chunked", "chunks", "file_size",
                 "chunked_size", "xattr", "external", "external_file_size")

COLUMNS = ("md5path_1", "md5path_2", "parent_1", "parent_2", "hardlinks", "hash", "size", "mode", "mtime",
           "mtimens", "flags", "name", "symlink", "uid", "gid", "xattr")

_SCHEMA_SQL = [
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER, "
    "hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER, flags INTEGER, "
    "name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB, "
    "CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2))",
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2)",
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, hash BLOB, "
    "CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size), "
    "FOREIGN KEY (md5path_1, md5path_2) REFERENCES catalog(md5path_1, md5path_2))",
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path))",
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path))",
    "CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter))",
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
]


@functools.lru_cache(maxsize=1 << 18)
@functools.lru_cache(maxsize=1 << 16)  # parents are asked for once per child, paths twice per publish
def md5_pair(path: str) -> tuple[int, int]:
    """Split MD5 of an absolute repository path into the two signed little-endian int64 columns."""
    return struct.unpack("<qq", hashlib.md5(path.encode("utf-8", "surrogateescape")).digest())


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0]


def serialize_xattrs(attrs: dict[str, bytes]) -> bytes | None:
    """Version 1 blob with single-byte counts and lengths, keys ascending; None when empty."""
    if not attrs:
        return None
    items = sorted((k.encode(), v) for k, v in attrs.items())
    out = bytearray([1, len(items)])
    for k, v in items:
        out += bytes([len(k), len(v)]) + k + v
    return bytes(out)


def parse_xattrs(blob: bytes | None) -> dict[str, bytes]:
    if not blob:
        return {}
    if blob[0] != 1:
        raise CvmfsIntegrityError(f"unsupported xattr blob version {blob[0]}")
    n, pos, out = blob[1], 2, {}
    for _ in range(n):
        klen, vlen = blob[pos], blob[pos + 1]
        pos += 2
        out[blob[pos:pos + klen].decode("utf-8", "surrogateescape")] = blob[pos + klen:pos + klen + vlen]
        pos += klen + vlen
    return out


@dataclass
class Entry:
    """One catalog row in Python form (paths absolute inside the repository, root = "")."""

    path: str
    mode: int
    size: int
    mtime: int
    flags: int
    uid: int = 0
    gid: int = 0
    hash: str | None = None  # hex
    symlink: str = ""
    mtimens: int | None = None
    hardlink_group: int = 0
    linkcount: int = 1
    xattr: bytes | None = None
    chunks: tuple[Chunk, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1] if self.path else ""

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & FLAG_DIR)

    @property
    def is_symlink(self) -> bool:
        return bool(self.flags & FLAG_LINK)

    @property
    def is_special(self) -> bool:
        return bool(self.flags & FLAG_FILE_SPECIAL)

    @property
    def is_regular(self) -> bool:
        return bool(self.flags & FLAG_FILE) and not self.flags & (FLAG_LINK | FLAG_FILE_SPECIAL)

    @property
    def is_chunked(self) -> bool:
        return bool(self.flags & FLAG_FILE_CHUNK)

    @property
    def is_nested_mountpoint(self) -> bool:
        return bool(self.flags & FLAG_DIR_NESTED_MOUNTPOINT)

    @property
    def compressed(self) -> bool:
        return (self.flags & FLAG_COMPRESSION_MASK) >> FLAG_COMPRESSION_SHIFT == 0

    @property
    def rdev(self) -> int:
        return self.size if self.is_special and (stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode)) else 0

    @property
    def file_size(self) -> int:
        """Size as a client reports it (0 for devices, whose size column holds st_rdev)."""
        return 0 if self.is_special else self.size

    @property
    def xattrs(self) -> dict[str, bytes]:
        return parse_xattrs(self.xattr)

    def row(self) -> tuple:
        p1, p2 = md5_pair(self.path)
        q1, q2 = md5_pair(parent_path(self.path)) if self.path else (0, 0)  # repository root: null parent
        raw = bytes.fromhex(self.hash) if self.hash else None
        return (p1, p2, q1, q2, (self.hardlink_group << 32) | self.linkcount, raw, self.size, self.mode,
                self.mtime, self.mtimens, self.flags, self.name, self.symlink, self.uid, self.gid, self.xattr)


@dataclass
class NestedRef:
    path: str
    hash: str
    size: int


@dataclass
class Counters:
    """self_* (this catalog's rows) and subtree_* (everything in nested catalogs below it)."""

    self_: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    subtree: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))

    def add_entry(self, e: Entry) -> None:
        s = self.self_
        if e.is_dir:
            s["dir"] += 1
        elif e.is_symlink:
            s["symlink"] += 1
        elif e.is_special:
            s["special"] += 1
        elif e.flags & FLAG_FILE_EXTERNAL:
            s["external"] += 1
            s["external_file_size"] += e.size
        if e.is_regular:
            s["regular"] += 1
            s["file_size"] += e.size
            if e.is_chunked:
                s["chunked"] += 1
                s["chunked_size"] += e.size
                s["chunks"] += len(e.chunks)
        if e.xattr is not None:
            s["xattr"] += 1

    def add_child(self, child: "Counters") -> None:
        for k in COUNTER_NAMES:
            self.subtree[k] += child.self_[k] + child.subtree[k]

    def rows(self) -> list[tuple[str, int]]:
        return sorted([(f"self_{k}", v) for k, v in self.self_.items()] +
                      [(f"subtree_{k}", v) for k, v in self.subtree.items()])

    @classmethod
    def from_rows(cls, rows: dict[str, int]) -> "Counters":
        c = cls()
        for k in COUNTER_NAMES:
            c.self_[k] = int(rows.get(f"self_{k}", 0))
            c.subtree[k] = int(rows.get(f"subtree_{k}", 0))
        return c


def content_digest(entries: list[Entry], nested: list[NestedRef]) -> str:
    """Digest of what a catalog says (rows, chunks, nested references), independent of its properties.

    Two catalogs with the same digest describe the same subtree, so the older object can be reused.
    """
    h = hashlib.sha1()
    for e in sorted(entries, key=lambda e: md5_pair(e.path)):
        h.update(repr(e.row()).encode())
        for c in e.chunks:
            h.update(repr((c.offset, c.size, c.hash)).encode())
    for n in sorted(nested, key=lambda n: n.path):
        h.update(repr((n.path, n.hash, n.size)).encode())
    return h.hexdigest()


def write_catalog(dest: Path, entries: list[Entry], nested: list[NestedRef], properties: dict[str, str],
                  counters: Counters) -> None:
    """Create a complete catalog database file at DEST (rows inserted in sorted path order)."""
    with new_database(dest, _SCHEMA_SQL) as db:
        entries = sorted(entries, key=lambda e: e.path.encode("utf-8", "surrogateescape"))
        db.executemany(f"INSERT INTO catalog ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                       [e.row() for e in entries])
        chunk_rows = []
        for e in entries:
            if e.chunks:
                p1, p2 = md5_pair(e.path)
                chunk_rows += [(p1, p2, c.offset, c.size, bytes.fromhex(c.hash)) for c in e.chunks]
        db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?)", chunk_rows)
        db.executemany("INSERT INTO nested_catalogs VALUES (?,?,?)",
                       [(n.path, n.hash, n.size) for n in sorted(nested, key=lambda n: n.path)])
        db.executemany("INSERT INTO statistics VALUES (?,?)", counters.rows())
        db.executemany("INSERT INTO properties VALUES (?,?)", sorted(properties.items()))


class CatalogReader:
    """Read access to one decompressed catalog file; tolerant of older schema revisions."""

    def __init__(self, path: str | os.PathLike, what: str = "catalog"):
        self.what = what
        self.file_size = os.path.getsize(path)
        try:
            self.db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
            self.db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            self.properties = dict(self.db.execute("SELECT key, value FROM properties"))
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(catalog)")}
        except sqlite3.DatabaseError as exc:
            raise CvmfsIntegrityError(f"{what} is not a valid catalog database: {exc}") from exc
        if "schema" not in self.properties or "revision" not in self.properties:
            raise CvmfsIntegrityError(f"{what} lacks the schema/revision properties")
        self._select = ", ".join(c if c in cols else f"NULL AS {c}" for c in COLUMNS)
        self.root_prefix = self.properties.get("root_prefix", "")
        if self.root_prefix == "/":
            self.root_prefix = ""

    def close(self) -> None:
        self.db.close()

    @property
    def revision(self) -> int:
        return int(self.properties["revision"])

    @property
    def schema_revision(self) -> int:
        return int(self.properties.get("schema_revision", 0))

    def _entry(self, row: tuple, path: str) -> Entry:
        e = self._entry_only(row, path)
        if e.is_chunked:
            e.chunks = self.chunks(path)
        return e

    @staticmethod
    def _entry_only(row: tuple, path: str) -> Entry:
        (_, _, _, _, hardlinks, raw, size, mode, mtime, mtimens, flags, name, symlink, uid, gid, xattr) = row
        hardlinks = hardlinks or 0
        e = Entry(path=path, mode=mode, size=size or 0, mtime=mtime or 0, flags=flags, uid=uid or 0,
                  gid=gid or 0, hash=raw.hex() if raw else None, symlink=symlink or "", mtimens=mtimens,
                  hardlink_group=hardlinks >> 32, linkcount=hardlinks & 0xFFFFFFFF, xattr=xattr)
        return e

    def lookup(self, path: str) -> Entry | None:
        p1, p2 = md5_pair(path)
        row = self.db.execute(f"SELECT {self._select} FROM catalog WHERE md5path_1=? AND md5path_2=?",
                              (p1, p2)).fetchone()
        return self._entry(row, path) if row else None

    def listing(self, path: str) -> list[Entry]:
        p1, p2 = md5_pair(path)
        rows = self.db.execute(f"SELECT {self._select} FROM catalog WHERE parent_1=? AND parent_2=?",
                               (p1, p2)).fetchall()
        out = []
        for row in rows:
            if (row[0], row[1]) == (p1, p2):  # a nested root's entry points at its real parent; skip self
                continue
            out.append(self._entry(row, f"{path}/{row[11]}"))
        return sorted(out, key=lambda e: e.name.encode("utf-8", "surrogateescape"))

    def chunks(self, path: str) -> tuple[Chunk, ...]:
        p1, p2 = md5_pair(path)
        rows = self.db.execute("SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
                               "ORDER BY offset", (p1, p2)).fetchall()
        return tuple(Chunk(o, s, h.hex()) for o, s, h in rows)

    def nested(self) -> list[NestedRef]:
        return [NestedRef(p, h, s) for p, h, s in
                self.db.execute("SELECT path, sha1, size FROM nested_catalogs ORDER BY path")]

    def statistics(self) -> dict[str, int]:
        try:
            return dict(self.db.execute("SELECT counter, value FROM statistics"))
        except sqlite3.DatabaseError:
            return {}

    def all_entries(self, ordered: bool = True) -> list[Entry]:
        """Every row with its full path (root entry first), in one table scan.

        Paths are rebuilt from the parent hashes, so rows that cannot be reached from the catalog's root
        entry are left out (the verifier compares the count with row_count()).
        """
        rootkey = md5_pair(self.root_prefix)
        rows = {(r[0], r[1]): r for r in self.db.execute(f"SELECT {self._select} FROM catalog")}
        if rootkey not in rows:
            raise CvmfsIntegrityError(f"{self.what} has no root entry for {self.root_prefix or '/'}")
        chunks: dict[tuple[int, int], list[Chunk]] = {}
        for p1, p2, o, sz, h in self.db.execute(
                "SELECT md5path_1, md5path_2, offset, size, hash FROM chunks ORDER BY offset"):
            chunks.setdefault((p1, p2), []).append(Chunk(o, sz, h.hex()))
        paths: dict[tuple[int, int], str | None] = {rootkey: self.root_prefix}

        def path_of(key: tuple[int, int]) -> str | None:
            trail = []
            while key not in paths:
                row = rows.get(key)
                if row is None or len(trail) > len(rows):
                    for k in trail:
                        paths[k] = None
                    return None
                trail.append(key)
                key = (row[2], row[3])
            base = paths[key]
            for k in reversed(trail):
                base = None if base is None else f"{base}/{rows[k][11]}"
                paths[k] = base
            return paths[trail[0]] if trail else base

        out = []
        for key, row in rows.items():
            path = path_of(key)
            if path is None:
                continue
            e = self._entry_only(row, path)
            if e.is_chunked:
                e.chunks = tuple(chunks.get(key, ()))
            out.append(e)
        if ordered:
            out.sort(key=lambda e: (e.path != self.root_prefix, e.path.encode("utf-8", "surrogateescape")))
        return out

    def file_stats(self) -> dict[tuple[int, int], tuple]:
        """Every regular file's row, for the publisher's stat cache, in one lean scan (no paths rebuilt):
        (md5path_1, md5path_2) -> (size, mtime, mtimens, mode, flags, hex hash or None, chunks)."""
        chunks: dict[tuple[int, int], list[Chunk]] = {}
        for p1, p2, o, sz, h in self.db.execute(
                "SELECT md5path_1, md5path_2, offset, size, hash FROM chunks ORDER BY offset"):
            chunks.setdefault((p1, p2), []).append(Chunk(o, sz, h.hex()))
        out = {}
        cols = "md5path_1, md5path_2, size, mtime, " + ("mtimens" if "mtimens" in self._select.split(", ")
                                                        else "NULL") + ", mode, flags, hash"
        for p1, p2, size, mtime, mtimens, mode, flags, raw in self.db.execute(
                f"SELECT {cols} FROM catalog WHERE flags & {FLAG_FILE} AND NOT flags & {FLAG_LINK | FLAG_FILE_SPECIAL}"):
            key = (p1, p2)
            out[key] = (size or 0, mtime or 0, mtimens, mode, flags, raw.hex() if raw else None,
                        tuple(chunks.get(key, ())) if flags & FLAG_FILE_CHUNK else ())
        return out

    def row_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM catalog").fetchone()[0]
