"""The reference log `.cvmfsreflog`: every root-level object a repository ever referenced (schema 1.0 rev 0).

Plain (uncompressed) SQLite in the repository root, named by the manifest's `Y` line (SHA-1 of the file
bytes). cvmfs_server uses it for garbage collection and `cvmfs_server check` requires the manifest's C, X,
H and M to be listed. Like the history, the file is rebuilt from the reference list on every change (rows
sorted, one transaction), so its bytes depend only on the references and their timestamps: with
SOURCE_DATE_EPOCH two equal repositories have equal reflogs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cernvm_build.cvmfs.database import new_database, read_database
from cernvm_build.util.files import atomic_path

REFLOG_FILE = ".cvmfsreflog"
TYPE_CATALOG, TYPE_CERTIFICATE, TYPE_HISTORY, TYPE_METAINFO = 0, 1, 2, 3
SUFFIX_OF_TYPE = {TYPE_CATALOG: "C", TYPE_CERTIFICATE: "X", TYPE_HISTORY: "H", TYPE_METAINFO: "M"}
TYPE_OF_SUFFIX = {v: k for k, v in SUFFIX_OF_TYPE.items()}

_SCHEMA_SQL = [
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE refs (hash TEXT, type INTEGER, timestamp INTEGER, CONSTRAINT pk_refs PRIMARY KEY (hash))",
]

# hex hash -> (type, timestamp)
Refs = dict[str, tuple[int, int]]


def write_reflog(dest: Path, fqrn: str, refs: Refs) -> str:
    """Write the reflog to DEST atomically; return the SHA-1 of its bytes (the manifest's Y)."""
    with atomic_path(dest, 0o644) as tmp:
        with new_database(tmp, _SCHEMA_SQL) as db:
            db.executemany("INSERT INTO properties VALUES (?,?)",
                           sorted({"schema": "1.0", "schema_revision": "0", "fqrn": fqrn}.items()))
            db.executemany("INSERT INTO refs VALUES (?,?,?)",
                           [(h, t, ts) for h, (t, ts) in sorted(refs.items(), key=lambda kv: (kv[1][0], kv[0]))])
        digest = hashlib.sha1(tmp.read_bytes()).hexdigest()
    return digest


def read_reflog(path: str | os.PathLike, what: str = REFLOG_FILE) -> tuple[dict[str, str], Refs]:
    return read_database(path, what, "reflog", lambda db: {
        h: (t, ts) for h, t, ts in db.execute("SELECT hash, type, timestamp FROM refs")})


def load_refs(repo: Path) -> Refs | None:
    """The repository's current references, or None when it has no reflog yet."""
    path = Path(repo) / REFLOG_FILE
    if not path.exists():
        return None
    return read_reflog(path, f"{REFLOG_FILE} of {repo}")[1]


def add(refs: Refs, hexdigest: str | None, type_: int, timestamp: int) -> None:
    """Record HEXDIGEST; a reference already present keeps its first timestamp."""
    if hexdigest and hexdigest not in refs:
        refs[hexdigest] = (type_, timestamp)


def missing_from(refs: Refs, manifest) -> list[str]:
    """Which of the manifest's C, X, H, M the reflog lacks (what `cvmfs_server check` looks for)."""
    out = []
    for letter, value, type_ in (("C", manifest.root_catalog, TYPE_CATALOG),
                                 ("X", manifest.certificate, TYPE_CERTIFICATE),
                                 ("H", manifest.history, TYPE_HISTORY), ("M", manifest.metainfo, TYPE_METAINFO)):
        if value and refs.get(value, (None,))[0] != type_:
            out.append(f"{letter} {value}")
    return out
