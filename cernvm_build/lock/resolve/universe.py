"""A libsolv pool over verified repository metadata, loaded through libsolv's own .solv cache.

The first load of a repository parses its index files (and for Debian builds the side table of what
libsolv does not keep); later loads read the .solv file keyed by the verified index digests and the
libsolv version, which is what makes a warm `lock` take a fraction of a second.
"""

from __future__ import annotations

import ctypes
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import solv

from cernvm_build.formats import PackageFormat
from cernvm_build.lock.resolve.repository import LoadedRepo
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.files import atomic_path
from cernvm_build.util.timing import mark


SOLV_CACHE_FORMAT = "4"         # 4: the Debian side index holds the name graph (formats/deb/index.py)


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
    side: Any = None           # what the format keeps beside libsolv (Debian: formats.deb.index.DebIndex)
    positions: Any = None      # when only some entries of the index are loaded: their positions, in order

    def pos(self, sid: int) -> int:
        """The position in the index file (and its side data) of solvable SID of this part."""
        k = sid - self.first_id
        return k if self.positions is None else self.positions[k]


@dataclass
class Universe:
    """The libsolv pool of one resolution and, per index file, what the format keeps beside it."""

    pool: "solv.Pool"
    format: PackageFormat
    arch: str
    parts: list[RepoPart] = field(default_factory=list)
    unprovided_files: list[str] = field(default_factory=list)   # file dependencies nothing provides
    narrowed: bool = False      # only what a request reaches is loaded (formats/deb/universe.py, add_needed)
    _starts: list[int] = field(default_factory=list)            # first solvable id of each non-empty part
    _ranged: list[RepoPart] = field(default_factory=list)       # those parts, in the same order
    _ends: list[int] = field(default_factory=list)              # and the id after each one's last

    def index_parts(self) -> None:
        """Make part_of_id work: a repo's solvables are one contiguous id range (each is loaded whole,
        one after the other), so a bisect finds the part without asking libsolv for the solvable's repo
        (which makes a SWIG object per call, on the hot path of apt's walk)."""
        ranged = sorted((p for p in self.parts if p.solv_repo.nsolvables), key=lambda p: p.first_id)
        self._starts = [p.first_id for p in ranged]
        self._ranged = ranged
        self._ends = [p.first_id + p.solv_repo.nsolvables for p in ranged]

    def part_of_id(self, sid: int) -> RepoPart:
        k = bisect_right(self._starts, sid) - 1
        assert 0 <= k and sid < self._ends[k]
        return self._ranged[k]

    def part_of(self, s: "solv.XSolvable") -> RepoPart:
        return self.part_of_id(s.id)

    @property
    def flavour(self) -> str:
        return self.format.name

    def size_of(self, s: "solv.XSolvable") -> int:
        return self.format.download_size(self.part_of(s), s)


def new_pool(fmt: PackageFormat, arch: str) -> "solv.Pool":
    pool = solv.Pool()
    pool.setdisttype(getattr(solv.Pool, fmt.solv_disttype))
    pool.setarch(arch)
    return pool


def first_id(repo: "solv.Repo") -> int:
    """The id of a repo's first solvable: a format's side data is indexed from it."""
    return next(iter(repo.solvables_iter())).id if repo.nsolvables else 0


def read_solv(repo: "solv.Repo", path: Path) -> bool:
    """Load a .solv cache file into REPO; False when it is missing or unreadable."""
    if not path.exists():
        return False
    f = solv.xfopen(str(path))
    ok = f is not None and repo.add_solv(f)
    if f is not None:
        f.close()
    return bool(ok)


def write_solv(repo: "solv.Repo", path: Path) -> None:
    with atomic_path(path) as tmp:
        out = solv.xfopen(str(tmp), "w")
        repo.write(out)
        out.close()


def open_universe(fmt: PackageFormat, arch: str, loaded: list[LoadedRepo], store: ContentStore,
                  needed: Callable[[Universe], Iterable[str]] | None = None) -> Universe:
    """Build the pool: repositories in recipe order, which keeps every later choice deterministic.
    With NEEDED (the names a request asks for, given the universe's side data), a format that can
    loads only what those names reach (u.narrowed); the others load everything."""
    u = Universe(new_pool(fmt, arch), fmt, arch)
    parts = fmt.add_needed(u, loaded, store, needed) if needed is not None else None
    if parts is not None:
        u.parts, u.narrowed = parts, True
    else:
        for lr in loaded:
            u.parts += fmt.add_to_universe(u, lr, store)
    u.index_parts()
    mark("load .solv and side tables")
    if not fmt.file_dependencies:
        # no dependency of this format names a file (Debian): nothing for libsolv to look up
        u.pool.createwhatprovides()
        mark("whatprovides")
        return u
    needed = u.pool.addfileprovides_queue()
    u.pool.createwhatprovides()
    # rpm-md primary.xml lists only files under */bin/ and /etc/: a dependency on another path has
    # no provider until filelists are loaded (resolve.load_universe decides on that).
    u.unprovided_files = sorted(u.pool.id2str(i) for i in needed if not u.pool.whatprovides(i))
    mark("whatprovides")
    return u
