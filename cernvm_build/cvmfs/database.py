"""The SQLite files of a repository: written (catalogs, history, reflog) the one way that gives the same
bytes for the same rows — a new file, rollback journal, one transaction — and read back read-only."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from cernvm_build.errors import CvmfsIntegrityError

T = TypeVar("T")


@contextlib.contextmanager
def new_database(dest: Path, schema: Iterable[str]) -> Iterator[sqlite3.Connection]:
    """A fresh SQLite file at DEST (an old one is removed) with SCHEMA created, inside one transaction
    that is committed when the block ends without error. The file is written once and then stored or
    renamed by the caller, which decides on durability: no sync here."""
    if dest.exists():
        dest.unlink()
    db = sqlite3.connect(dest, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        for sql in schema:
            db.execute(sql)
        yield db
        db.execute("COMMIT")
    finally:
        db.close()


def read_database(path: str | os.PathLike, what: str, kind: str,
                  rows: Callable[[sqlite3.Connection], T]) -> tuple[dict[str, str], T]:
    """(properties, ROWS(db)) of a history or reflog database opened read-only; schema 1.0 only.
    WHAT names the file in errors, KIND the sort of database it should be."""
    try:
        db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
        try:
            props = dict(db.execute("SELECT key, value FROM properties"))
            got = rows(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise CvmfsIntegrityError(f"{what} is not a valid {kind} database: {exc}") from exc
    if props.get("schema") != "1.0":
        raise CvmfsIntegrityError(f"{what} has unsupported schema {props.get('schema')!r}")
    return props, got
