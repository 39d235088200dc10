"""Repository metadata: fetch, verify against signed documents, cache. One module per flavour.

Each flavour returns a LoadedRepo: the lock's record of what was resolved against, plus the verified
local index files the solver reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache import Cache
from ..closure import RepositoryRecord
from ..recipe import Recipe, Repository


@dataclass(frozen=True)
class LoadedRepo:
    record: RepositoryRecord
    indexes: tuple[Path, ...]          # verified local copies (decompressed), in a stable order
    kind: str                          # "deb" | "rpmmd"
    filelists: tuple[Path, ...] = ()   # rpm-md filelists, when loaded


@dataclass(frozen=True)
class FetchOptions:
    offline: bool = False              # use only what the cache holds (still verified)
    allow_expired: bool = False        # accept Valid-Until in the past (logged)
    with_filelists: bool = False       # rpm-md: also load filelists.xml


def load_repository(recipe: Recipe, repo: Repository, cache: Cache, options: FetchOptions) -> LoadedRepo:
    if recipe.flavour == "deb":
        from .deb import load_deb_repository

        return load_deb_repository(repo, recipe.arch, cache, options)
    from .rpmmd import load_rpmmd_repository

    return load_rpmmd_repository(repo, recipe.arch, cache, options)
