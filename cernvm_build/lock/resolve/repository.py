"""What loading one repository gives the solver, whatever its format (see formats/*/):
the lock's record of what was resolved against, plus the verified local index files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cernvm_build.lock.lockfile import RepositoryRecord


@dataclass(frozen=True)
class LoadedRepo:
    """A recipe repository after loading: what the lock records of it, and its verified index files."""

    record: RepositoryRecord
    indexes: tuple[Path, ...]          # verified local copies (decompressed), in a stable order
    filelists: tuple[Path, ...] = ()   # file lists (rpm-md filelists.xml), when loaded


@dataclass(frozen=True)
class MetadataOptions:
    """How repository metadata may be obtained (the package fetch has its own: store.fetch.FetchOptions)."""

    offline: bool = False              # use only what the content store holds (still verified)
    allow_expired: bool = False        # accept Valid-Until in the past (logged)
    with_filelists: bool = False       # also load file lists (rpm-md filelists.xml)
