"""The one local content store: files named by the sha256 a trusted document lists for them.

Two kinds of files live in it, admitted the same way — only after their digest was checked:
- metadata blobs (`blobs/sha256/xx/<sha>`): InRelease, Packages, repomd.xml, primary..., each named by
  the digest its *signed* parent document lists (or, for the signed document itself, by its own
  digest, re-verified with gpgv on every use);
- package files (`packages/sha256/xx/<sha>`): named by the sha256 the lock pins.
Files computed from verified blobs (libsolv's .solv cache, the Debian side index) are `derived`, keyed
by their inputs; a few named `pointers` remember which signed document a repository served last (for
--offline). Everything is written atomically (temporary sibling, then rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cernvm_build.errors import PackageChecksumError
from cernvm_build.util.files import atomic_write

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    env = os.environ.get("CERNVM_BUILD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cernvm-build"


class Pinned(Protocol):
    """What the store needs of a locked package: its pinned digest and size, and words for errors."""

    name: str
    arch: str
    size: int
    sha256: str

    @property
    def evr(self) -> str: ...


@dataclass(frozen=True)
class ContentStore:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None) -> "ContentStore":
        return cls(Path(root) if root else default_cache_dir())

    # ---- metadata ------------------------------------------------------------------------------
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

    # ---- packages ------------------------------------------------------------------------------
    def package(self, sha256: str) -> Path:
        """Where the package file with this (lock-pinned) sha256 is kept."""
        return self.root / "packages" / "sha256" / sha256[:2] / sha256

    def partial(self, sha256: str) -> Path:
        """Where an interrupted download waits to be resumed (never trusted: re-hashed when complete)."""
        return self.root / "packages" / "partial" / f"{sha256}.part"

    def has(self, pkg: Pinned) -> bool:
        p = self.package(pkg.sha256)
        try:
            return p.stat().st_size == pkg.size
        except OSError:
            return False

    def admit(self, tmp: Path, pkg: Pinned, source: str) -> Path:
        """Move TMP into the store if it is exactly the locked file; otherwise delete it and refuse."""
        try:
            size = tmp.stat().st_size
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
            got = h.hexdigest()
            if size != pkg.size or got != pkg.sha256:
                raise PackageChecksumError(
                    f"package {pkg.name} {pkg.evr} ({pkg.arch}) from {source}: "
                    + (f"size {size} != {pkg.size} in the lock" if size != pkg.size else
                       f"sha256 {got} != {pkg.sha256} in the lock")
                    + "; the file was refused")
            dest = self.package(pkg.sha256)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            return dest
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def tmpfile(self, pkg: Pinned) -> Path:
        d = self.root / "packages" / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{pkg.sha256}.{os.getpid()}.{threading.get_ident()}"
