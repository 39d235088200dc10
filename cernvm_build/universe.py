"""A libsolv pool over verified repository metadata, loaded through libsolv's own .solv cache.

The first load of a repository parses its index files (and for Debian builds the side table of what
libsolv does not keep); later loads read the .solv file keyed by the verified index digests and the
libsolv version, which is what makes a warm `lock` take a fraction of a second.
"""

from __future__ import annotations

import ctypes
import logging
from array import array
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import solv

from .cache import Cache
from .errors import MetadataError
from .fsutil import atomic_path
from .repos import LoadedRepo
from .repos import debindex

log = logging.getLogger(__name__)

SOLV_CACHE_FORMAT = "3"


@lru_cache(maxsize=1)
def libsolv_version() -> str:
    """The libsolv library version (the Python bindings do not expose it)."""
    try:
        lib = ctypes.CDLL("libsolv.so.1")
        c = ctypes.c_char.in_dll(lib, "solv_version")
        return (ctypes.cast(ctypes.addressof(c), ctypes.c_char_p).value or b"").decode()
    except (OSError, ValueError):
        return "unknown"


@dataclass
class RepoPart:
    """One solv.Repo: one index file of one recipe repository."""

    loaded: LoadedRepo
    solv_repo: "solv.Repo"
    first_id: int
    debindex: debindex.DebIndex | None = None


@dataclass
class Universe:
    pool: "solv.Pool"
    flavour: str
    arch: str
    parts: list[RepoPart] = field(default_factory=list)
    unprovided_files: list[str] = field(default_factory=list)   # file dependencies nothing provides
    _by_repo_id: dict[int, RepoPart] = field(default_factory=dict)

    def part_of(self, s: "solv.XSolvable") -> RepoPart:
        return self._by_repo_id[s.repo.id]

    def deb_index_of(self, s: "solv.XSolvable") -> tuple[debindex.DebIndex, int]:
        part = self._by_repo_id[s.repo.id]
        assert part.debindex is not None
        return part.debindex, s.id - part.first_id

    def size_of(self, s: "solv.XSolvable") -> int:
        if self.flavour == "deb":
            idx, i = self.deb_index_of(s)
            return idx.size[i]
        return s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE)


def _new_pool(flavour: str, arch: str) -> "solv.Pool":
    pool = solv.Pool()
    if flavour == "deb":
        pool.setdisttype(solv.Pool.DISTTYPE_DEB)
    else:
        pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch(arch)
    return pool


def _build_deb_cache(path: Path, arch: str, solv_file: Path, side_file: Path, what: str) -> None:
    """Parse a Packages file once, in a private pool, into the .solv cache and its side table.

    A private pool makes the side table independent of whatever else is loaded: its name ranks are
    the order in which names first appear in this file, which is how apt numbers its packages
    (pkgCacheGenerator creates a package at its first mention, stanza or dependency), and apt
    breaks provider ties and orders requested packages by that number.
    """
    tp = _new_pool("deb", arch)
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
    with atomic_path(solv_file) as tmp:
        out = solv.xfopen(str(tmp), "w")
        trepo.write(out)
        out.close()
    debindex.save(index, side_file)
    tp.free()


def _add_deb_part(u: Universe, loaded: LoadedRepo, n: int, path: Path, sha: str, cache: Cache) -> RepoPart:
    key = f"deb-{sha}-{libsolv_version()}-{SOLV_CACHE_FORMAT}"
    solv_file = cache.derived("solv", key, ".solv")
    side_file = cache.derived("solv", key, ".debindex")
    repo = u.pool.add_repo(f"{loaded.record.name}#{n}")
    for attempt in (1, 2):
        if not (solv_file.exists() and side_file.exists()):
            _build_deb_cache(path, u.arch, solv_file, side_file, f"{loaded.record.url}: {path.name}")
        f = solv.xfopen(str(solv_file))
        ok = f is not None and repo.add_solv(f)
        if f is not None:
            f.close()
        try:
            index = debindex.load(side_file, path) if ok else None
        except MetadataError:
            index = None
        if index is not None and len(index.offset) == repo.nsolvables:
            first = next(iter(repo.solvables_iter())).id if repo.nsolvables else 0
            return RepoPart(loaded, repo, first, index)
        log.info("unusable cache %s; rebuilding", solv_file)
        repo.empty()
        solv_file.unlink(missing_ok=True)
        side_file.unlink(missing_ok=True)
    raise MetadataError(f"{solv_file}: cannot load the libsolv cache just written")


def _add_rpmmd_part(u: Universe, loaded: LoadedRepo, cache: Cache) -> RepoPart:
    pool = u.pool
    shas = "-".join(i.sha256[:16] for i in loaded.record.indexes)
    key = f"rpmmd-{shas}-{len(loaded.filelists)}-{libsolv_version()}-{SOLV_CACHE_FORMAT}"
    solv_file = cache.derived("solv", key, ".solv")
    repo = pool.add_repo(loaded.record.name)
    if solv_file.exists():
        f = solv.xfopen(str(solv_file))
        if f is not None and repo.add_solv(f):
            f.close()
            first = next(iter(repo.solvables_iter())).id if repo.nsolvables else 0
            return RepoPart(loaded, repo, first)
        repo.empty()
    for path in loaded.indexes:
        f = solv.xfopen(str(path))
        if f is None or not repo.add_rpmmd(f, None, 0):
            raise MetadataError(f"{path}: libsolv cannot parse this rpm-md primary file")
        f.close()
    for path in loaded.filelists:
        f = solv.xfopen(str(path))
        if f is None or not repo.add_rpmmd(f, None, solv.Repo.REPO_EXTEND_SOLVABLES):
            raise MetadataError(f"{path}: libsolv cannot parse this rpm-md filelists file")
        f.close()
    with atomic_path(solv_file) as tmp:
        out = solv.xfopen(str(tmp), "w")
        repo.write(out)
        out.close()
    first = next(iter(repo.solvables_iter())).id if repo.nsolvables else 0
    return RepoPart(loaded, repo, first)


def open_universe(flavour: str, arch: str, loaded: list[LoadedRepo], cache: Cache) -> Universe:
    """Build the pool: repositories in recipe order, which keeps every later choice deterministic."""
    u = Universe(_new_pool(flavour, arch), flavour, arch)
    for lr in loaded:
        if lr.kind == "deb":
            for n, (path, info) in enumerate(zip(lr.indexes, lr.record.indexes)):
                u.parts.append(_add_deb_part(u, lr, n, path, info.sha256, cache))
        else:
            u.parts.append(_add_rpmmd_part(u, lr, cache))
    for part in u.parts:
        u._by_repo_id[part.solv_repo.id] = part
    needed = u.pool.addfileprovides_queue()
    u.pool.createwhatprovides()
    # rpm-md primary.xml lists only files under */bin/ and /etc/: a dependency on another path has
    # no provider until filelists are loaded (resolve.load_universe decides on that).
    u.unprovided_files = sorted(u.pool.id2str(i) for i in needed if not u.pool.whatprovides(i))
    return u
