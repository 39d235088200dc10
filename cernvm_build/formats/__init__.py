"""Package formats: one implementation per format (deb, rpm) of one small interface, as mkosi has one
package manager per installer.

Everything that differs between Debian and rpm-md lives behind `PackageFormat`: the repository keys a
recipe may give, loading signed repository metadata and adding it to the libsolv universe, the
format's own resolution rules (apt's choices, dnf's obsoleters), version order, SBOM identifiers,
unpacking and installing payloads into a tree, extracting one package, and the index of a bundle's
local repository. The rest of cernvm-build asks `get(flavour)` and never branches on the format, so a
third format (Alpine's apk, say) is one new package here: `formats/apk/` with a `FORMAT` object.

Implementations are found by name (`cernvm_build.formats.<flavour>`) and imported on first use, so
this module imports nothing of theirs: lower layers (lock, rootfs, store) depend on the interface
only, and each implementation may use any of them.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from cernvm_build.errors import CernVMBuildError

if TYPE_CHECKING:        # types only: the implementations import these modules, not this one
    import solv

    from cernvm_build.lock.lockfile import Closure, LockedPackage, RepositoryRecord
    from cernvm_build.lock.recipe import PackageSpec, Recipe, Repository
    from cernvm_build.lock.resolve.repository import LoadedRepo, MetadataOptions
    from cernvm_build.lock.resolve.universe import RepoPart, Universe
    from cernvm_build.util.content_store import ContentStore
    from cernvm_build.util.strict_toml import StrictTable


class PackageFormat(ABC):
    """What cernvm-build needs to know about one package format."""

    name: str = ""                    # the recipe's and lock's `flavour`
    native_choices: str = ""          # whose resolution the lock follows by default ("apt", "dnf")
    solv_disttype: str = ""           # libsolv Pool.DISTTYPE_* constant name
    priorities: tuple[str, ...] = ()  # recipe `priorities` this format knows (Debian: required, ...)
    file_dependencies: bool = False   # dependencies on paths exist (rpm): file lists may be needed

    # ---- recipe ------------------------------------------------------------------------------------
    @abstractmethod
    def parse_repository(self, t: "StrictTable", where: str, name: str, url: str, keyring: str) -> "Repository":
        """The format's own keys of one [[repositories]] table (name, url and keyring already read)."""

    # ---- resolving ---------------------------------------------------------------------------------
    @abstractmethod
    def load_repository(self, repo: "Repository", arch: str, store: "ContentStore",
                        options: "MetadataOptions") -> "LoadedRepo":
        """Fetch and verify the repository's signed metadata and the indexes it lists."""

    @abstractmethod
    def add_to_universe(self, u: "Universe", loaded: "LoadedRepo", store: "ContentStore") -> list["RepoPart"]:
        """Load verified indexes into U's pool (through libsolv's .solv cache); one part per solv.Repo."""

    def add_needed(self, u: "Universe", loaded: list["LoadedRepo"], store: "ContentStore",
                   roots: Callable[["Universe"], Iterable[str]]) -> list["RepoPart"] | None:
        """Only what the names ROOTS(u) can reach through dependencies, or None when the format
        cannot tell (then the whole universe is loaded)."""
        return None

    @abstractmethod
    def download_size(self, part: "RepoPart", s: "solv.XSolvable") -> int:
        """The package file's size, as the repository metadata states it."""

    def base_specs(self, u: "Universe", recipe: "Recipe") -> list["PackageSpec"]:
        """Entries a recipe asks for by property rather than name (Debian: Essential, priorities)."""
        return []

    def alternatives(self, u: "Universe", considered: list[int] | None
                     ) -> Callable[["PackageSpec", list[int]], list[int]] | None:
        """The format's resolver's extra candidates for a shopping-list entry (dnf: obsoleters)."""
        return None

    def preferred(self, u: "Universe", requested: list["solv.XSolvable"], weak: bool,
                  installed: list["solv.XSolvable"]) -> set[int] | None:
        """The packages the format's own resolver would choose (apt's choices), or None."""
        return None

    # ---- reading locks -----------------------------------------------------------------------------
    @abstractmethod
    def compare_versions(self, a: str, b: str) -> int:
        """<0, 0, >0 as version A is older than, equal to, newer than B ([epoch:]version[-release])."""

    @abstractmethod
    def purl(self, closure: "Closure", pkg: "LockedPackage") -> str:
        """The package URL (SBOM identifier) of a locked package."""

    # ---- payloads ----------------------------------------------------------------------------------
    @abstractmethod
    def build_tree(self, closure: "Closure", root: Path, files: dict[str, Path], options: Any,
                   sde: int) -> dict:
        """Unpack (and in install mode configure) every package of CLOSURE into ROOT, in the lock's order."""

    @abstractmethod
    def extract(self, package: Path, dest: Path) -> None:
        """Every file of one (verified) package file below DEST, nothing run (the boot kernel)."""

    # ---- bundles -----------------------------------------------------------------------------------
    @abstractmethod
    def index_bundle(self, repo_dir: Path, record: "RepositoryRecord", arch: str) -> None:
        """Make REPO_DIR, holding the locked files at their locations, a repository the format's tools use."""


def lazy(module: str, function: str) -> Callable:
    """A method that calls MODULE.FUNCTION (without self), importing MODULE on first call: a format's
    heavy parts (libsolv, apt_pkg, rpm) load only when used, which keeps `cernvm-build lock` light."""

    def method(self: PackageFormat, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    method.__name__ = function
    return method


@lru_cache(maxsize=1)
def flavours() -> tuple[str, ...]:
    """The formats this installation has: one subpackage each (listed once: `get` is on hot paths,
    e.g. once per package compared by `diff`). Found as pkgutil.iter_modules would, without importing
    pkgutil into every command."""
    return tuple(sorted(e.name for d in __path__ for e in os.scandir(d)
                        if e.is_dir() and "." not in e.name and os.path.isfile(os.path.join(e.path, "__init__.py"))))


@lru_cache(maxsize=None)
def _load(flavour: str) -> PackageFormat:
    return importlib.import_module(f"{__name__}.{flavour}").FORMAT


def get(flavour: str, error: type[CernVMBuildError] = CernVMBuildError, what: str = "") -> PackageFormat:
    """The implementation for FLAVOUR; an unknown one raises ERROR naming WHAT needed it."""
    if flavour not in flavours():
        raise error(f"{what + ': ' if what else ''}flavour {flavour!r} is not a known package format "
                    f"(known: {', '.join(flavours())})")
    return _load(flavour)
