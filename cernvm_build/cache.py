"""The local metadata cache: content-addressed blobs plus a few named pointers.

Blobs are stored by the sha256 that a *signed* document lists for them, and only after that digest
was checked, so a blob found here is trusted without re-reading it. Everything is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .fsutil import atomic_write


def default_cache_dir() -> Path:
    env = os.environ.get("CERNVM_BUILD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cernvm-build"


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None) -> "Cache":
        return cls(Path(root) if root else default_cache_dir())

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def derived(self, kind: str, key: str, suffix: str = "") -> Path:
        """Files computed from verified blobs (libsolv .solv, side tables): keyed by their inputs."""
        return self.root / kind / f"{key}{suffix}"

    def pointer(self, name: str) -> Path:
        return self.root / "pointers" / name

    def read_pointer(self, name: str) -> str | None:
        try:
            return self.pointer(name).read_text().strip() or None
        except OSError:
            return None

    def write_pointer(self, name: str, value: str) -> None:
        atomic_write(self.pointer(name), value + "\n")
