"""Debian indexes in the libsolv universe: one solv.Repo per Packages file, with the side index of what
libsolv does not keep (formats.deb.index), both cached by the index's verified digest."""

from __future__ import annotations

import logging
from array import array
from pathlib import Path

import solv

from cernvm_build.errors import MetadataError
from cernvm_build.formats.deb import index as debindex
from cernvm_build.lock.resolve.repository import LoadedRepo
from cernvm_build.lock.resolve.universe import (
    SOLV_CACHE_FORMAT,
    RepoPart,
    Universe,
    first_id,
    libsolv_version,
    new_pool,
    read_solv,
    write_solv,
)
from cernvm_build.util.content_store import ContentStore

log = logging.getLogger(__name__)


def side_index(u: Universe, s: "solv.XSolvable") -> tuple[debindex.DebIndex, int]:
    """The side index of the part S belongs to, and S's position in it."""
    part = u.part_of_id(s.id)
    assert part.side is not None
    return part.side, s.id - part.first_id


def _build_cache(u: Universe, path: Path, solv_file: Path, side_file: Path, what: str) -> None:
    """Parse a Packages file once, in a private pool, into the .solv cache and its side table.

    A private pool makes the side table independent of whatever else is loaded: its name ranks are
    the order in which names first appear in this file, which is how apt numbers its packages
    (pkgCacheGenerator creates a package at its first mention, stanza or dependency), and apt
    breaks provider ties and orders requested packages by that number.
    """
    tp = new_pool(u.format, u.arch)
    trepo = tp.add_repo("parse")
    f = solv.xfopen(str(path))
    if f is None or not trepo.add_debpackages(f, 0):
        raise MetadataError(f"{path}: libsolv cannot parse this Packages file")
    f.close()
    index, ids = debindex.build(path)
    solvables = list(trepo.solvables_iter())
    # libsolv and apt_pkg must see the same stanzas in the same order (the side table is positional)
    step = max(1, len(ids) // 500)
    if len(solvables) != len(ids) or [(s.name, s.evr, s.arch) for s in solvables[::step]] != ids[::step]:
        raise MetadataError(f"{what}: libsolv and apt disagree on the package list of this index "
                            "(malformed stanza?)")
    index.name_rank = array("q", (s.nameid for s in solvables))
    # texts nobody resolving needs: dropping them makes the .solv 40% smaller and faster to load
    for s in solvables:
        s.unset(solv.SOLVABLE_DESCRIPTION)
        s.unset(solv.SOLVABLE_SUMMARY)
        s.unset(solv.SOLVABLE_URL)
    trepo.internalize()
    write_solv(trepo, solv_file)
    debindex.save(index, side_file)
    tp.free()


def _add_part(u: Universe, loaded: LoadedRepo, n: int, path: Path, sha: str, store: ContentStore) -> RepoPart:
    key = f"deb-{sha}-{libsolv_version()}-{SOLV_CACHE_FORMAT}"
    solv_file = store.derived("solv", key, ".solv")
    side_file = store.derived("solv", key, ".debindex")
    repo = u.pool.add_repo(f"{loaded.record.name}#{n}")
    for attempt in (1, 2):
        # derived files are used only under their seal: a .solv anyone else wrote is rebuilt
        if not (store.trusted(solv_file) and store.trusted(side_file)):
            _build_cache(u, path, solv_file, side_file, f"{loaded.record.url}: {path.name}")
            store.remember(solv_file)
            store.remember(side_file)
        ok = read_solv(repo, solv_file)
        try:
            index = debindex.load(side_file, path) if ok else None
        except MetadataError:
            index = None
        if index is not None and len(index.offset) == repo.nsolvables:
            return RepoPart(loaded, repo, first_id(repo), index)
        log.info("unusable cache %s; rebuilding", solv_file)
        repo.empty()
        solv_file.unlink(missing_ok=True)
        side_file.unlink(missing_ok=True)
    raise MetadataError(f"{solv_file}: cannot load the libsolv cache just written")


def add_to_universe(u: Universe, loaded: LoadedRepo, store: ContentStore) -> list[RepoPart]:
    return [_add_part(u, loaded, n, path, info.sha256, store)
            for n, (path, info) in enumerate(zip(loaded.indexes, loaded.record.indexes))]
