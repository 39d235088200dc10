"""History database (`H` object): named tags pointing at root catalogs, schema 1.0 revision 3.

Each publish rewrites the whole (small) database from the tag list, so its bytes depend only on the
tags — no incremental SQLite history that would make two equal repositories differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from cernvm_build.cvmfs.database import new_database, read_database

TRUNK = "trunk"
TRUNK_PREVIOUS = "trunk-previous"
TRUNK_DESCRIPTION = "current HEAD"
TRUNK_PREVIOUS_DESCRIPTION = "default undo target"

_SCHEMA_SQL = [
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER, "
    "CONSTRAINT pk_branch PRIMARY KEY (branch), FOREIGN KEY (parent) REFERENCES branches (branch), "
    "CHECK ((branch <> '') OR (parent IS NULL)), CHECK ((branch = '') OR (parent IS NOT NULL)))",
    "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, channel INTEGER, "
    "description TEXT, size INTEGER, branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name), "
    "FOREIGN KEY (branch) REFERENCES branches (branch))",
    "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER, CONSTRAINT pk_hash PRIMARY KEY (hash))",
]


@dataclass(frozen=True)
class Tag:
    name: str
    hash: str  # hex root catalog hash
    revision: int
    timestamp: int
    description: str = ""
    size: int = 0  # uncompressed root catalog size
    channel: int = 0
    branch: str = ""


def write_history(dest: Path, fqrn: str, tags: list[Tag], previous: str | None) -> None:
    with new_database(dest, _SCHEMA_SQL) as db:
        props = {"schema": "1.0", "schema_revision": "3", "fqrn": fqrn}
        if previous:
            props["previous_revision"] = previous
        db.executemany("INSERT INTO properties VALUES (?,?)", sorted(props.items()))
        db.execute("INSERT INTO branches VALUES ('', NULL, 0)")
        db.executemany("INSERT INTO tags VALUES (?,?,?,?,?,?,?,?)",
                       [(t.name, t.hash, t.revision, t.timestamp, t.channel, t.description, t.size, t.branch)
                        for t in sorted(tags, key=lambda t: (t.revision, t.name))])


def read_history(path: str | os.PathLike, what: str = "history") -> tuple[dict[str, str], list[Tag]]:
    """(properties, tags ordered by revision then name); reads schema revisions 2 and 3."""
    def tags(db) -> list:
        cols = {r[1] for r in db.execute("PRAGMA table_info(tags)")}
        branch = "branch" if "branch" in cols else "''"
        return db.execute(f"SELECT name, hash, revision, timestamp, description, size, channel, {branch} "
                          "FROM tags ORDER BY revision, name").fetchall()

    props, rows = read_database(path, what, "history", tags)
    return props, [Tag(n, h, r, t, d or "", s or 0, c or 0, b or "") for n, h, r, t, d, s, c, b in rows]


def advance(tags: list[Tag], new: Tag) -> list[Tag]:
    """Tag list after a publish: NEW added, trunk moved to it, the old trunk kept as trunk-previous."""
    by_name = {t.name: t for t in tags}
    old_trunk = by_name.pop(TRUNK, None)
    by_name.pop(TRUNK_PREVIOUS, None)
    if old_trunk is not None:
        by_name[TRUNK_PREVIOUS] = replace(old_trunk, name=TRUNK_PREVIOUS, description=TRUNK_PREVIOUS_DESCRIPTION)
    if new.name not in (TRUNK, TRUNK_PREVIOUS):
        by_name[new.name] = new
    by_name[TRUNK] = replace(new, name=TRUNK, description=TRUNK_DESCRIPTION)
    return list(by_name.values())
