"""Debian indexes in the libsolv universe: one solv.Repo per Packages file, with the side index of what
libsolv does not keep (formats.deb.index), both cached by the index's verified digest.

A lock needs only the packages its request can reach: add_needed follows the side index's name graph
from the requested names (every alternative, every provider, every version) and gives libsolv just
those stanzas, parsed from the verified Packages file. What lies outside that set can neither be
installed nor satisfy a dependency of what can, so apt's walk and libsolv's proof of consistency see
the same candidates as over the whole archive (resolve.py falls back to the whole archive whenever
libsolv does more than check apt's choices).
"""

from __future__ import annotations

import mmap
import os
from array import array
from collections.abc import Callable, Iterable
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
from cernvm_build.util.log import getLogger

log = getLogger(__name__)


def side_index(u: Universe, s: "solv.XSolvable") -> tuple[debindex.DebIndex, int]:
    """The side index of the part S belongs to, and S's position in it."""
    part = u.part_of_id(s.id)
    assert part.side is not None
    return part.side, part.pos(s.id)


def _build_cache(u: Universe, path: Path, solv_file: Path | None, side_file: Path, what: str) -> None:
    """Parse a Packages file once, in a private pool, into its side table and (unless SOLV_FILE is
    None: a narrowed universe needs none) the .solv cache.

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
    if solv_file is not None:
        # texts nobody resolving needs: dropping them makes the .solv 40% smaller and faster to load
        for s in solvables:
            s.unset(solv.SOLVABLE_DESCRIPTION)
            s.unset(solv.SOLVABLE_SUMMARY)
            s.unset(solv.SOLVABLE_URL)
        trepo.internalize()
        write_solv(trepo, solv_file)
    debindex.save(index, side_file)
    tp.free()


def _cache_files(sha: str, store: ContentStore) -> tuple[Path, Path]:
    key = f"deb-{sha}-{libsolv_version()}-{SOLV_CACHE_FORMAT}"
    return store.derived("solv", key, ".solv"), store.derived("solv", key, ".debindex")


def _add_part(u: Universe, loaded: LoadedRepo, n: int, path: Path, sha: str, store: ContentStore) -> RepoPart:
    solv_file, side_file = _cache_files(sha, store)
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


def _side_table(u: Universe, loaded: LoadedRepo, path: Path, sha: str, store: ContentStore) -> debindex.DebIndex:
    """The side index alone (built when missing or unsealed; the .solv is left to the first load of
    the whole universe, which rewrites the side index with it)."""
    _, side_file = _cache_files(sha, store)
    for _ in (1, 2):
        if not store.trusted(side_file):
            _build_cache(u, path, None, side_file, f"{loaded.record.url}: {path.name}")
            store.remember(side_file)
        try:
            return debindex.load(side_file, path)
        except MetadataError:
            log.info("unusable side index %s; rebuilding", side_file)
            side_file.unlink(missing_ok=True)
    raise MetadataError(f"{side_file}: cannot load the side index just written")


def _reach(sides: list[debindex.DebIndex], roots: Iterable[str]) -> list[list[int]]:
    """Per side index, the stanzas (in file order) that ROOTS reach through Package/Provides names
    and Pre-Depends/Depends, across all indexes (a dependency in one may be provided by another;
    names are numbered alike in all of them). A stanza taken brings its own name too: every version of
    its package, as apt's candidate is the package's best version, which may not provide what the
    older one was reached through."""
    graphs = [s.graph for s in sides]
    taken: list[set[int]] = [set() for _ in graphs]
    todo = list({debindex.name_hash(r.encode()) for r in roots})
    seen = set(todo)
    while todo:
        name = todo.pop()
        for g, got in zip(graphs, taken):
            for i in g.providers(name):
                if i in got:
                    continue
                got.add(i)
                own = debindex.name_hash(g.package(i))
                if own not in seen:
                    seen.add(own)
                    todo.append(own)
                for d in g.needs(i):
                    if d not in seen:
                        seen.add(d)
                        todo.append(d)
    return [sorted(got) for got in taken]


def _load_stanzas(repo: "solv.Repo", index: debindex.DebIndex, stanzas: list[int], what: str) -> None:
    """Parse just STANZAS of the index's Packages file into REPO (libsolv's own parser, in memory)."""
    with open(index.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        ends = index.offset
        text = b"".join(mm[ends[i]:ends[i + 1] if i + 1 < len(ends) else index.end] for i in stanzas)
    fd = _anonymous_file()
    try:
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        f = solv.xfopen_fd(None, os.dup(fd))
        ok = f is not None and repo.add_debpackages(f, 0)
        if f is not None:
            f.close()
    finally:
        os.close(fd)
    # the same stanzas in the same order (a sample of names, as in _build_cache: solvables are slow to visit)
    step = max(1, len(stanzas) // 50)
    first = first_id(repo)
    if not ok or repo.nsolvables != len(stanzas) or [
            repo.pool.id2solvable(first + k).name for k in range(0, len(stanzas), step)] != [
            index.package_name(i) for i in stanzas[::step]]:
        raise MetadataError(f"{what}: libsolv and the side index disagree on the packages of this index")


def _anonymous_file() -> int:
    """A file descriptor of a file without a name (libsolv reads Packages text only from a file)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("cvb-packages")
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())


def add_needed(u: Universe, loaded: list[LoadedRepo], store: ContentStore,
               roots: Callable[[Universe], Iterable[str]]) -> list[RepoPart]:
    """Parts holding only what ROOTS(u) can reach; ROOTS sees the parts' side indexes before
    anything is in libsolv (Debian's base_specs reads Essential and Priority there)."""
    parts = []
    for lr in loaded:
        for n, (path, info) in enumerate(zip(lr.indexes, lr.record.indexes)):
            side = _side_table(u, lr, path, info.sha256, store)
            parts.append(RepoPart(lr, u.pool.add_repo(f"{lr.record.name}#{n}"), 0, side))
    u.parts = parts
    for part, stanzas in zip(parts, _reach([p.side for p in parts], roots(u))):
        _load_stanzas(part.solv_repo, part.side, stanzas, f"{part.loaded.record.url}: {part.side.path.name}")
        part.first_id = first_id(part.solv_repo)
        part.positions = array("i", stanzas)
        log.debug("%s: %d of %d packages reachable", part.solv_repo.name, len(stanzas), len(part.side.offset))
    return parts
