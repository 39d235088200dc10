"""The one local content store: files named by the sha256 a trusted document lists for them.

Two kinds of files live in it, admitted the same way — only after their digest was checked:
- metadata blobs (`blobs/sha256/xx/<sha>`): InRelease, Packages, repomd.xml, primary..., each named by
  the digest its *signed* parent document lists (or, for the signed document itself, by its own
  digest, re-verified with gpgv on every use);
- package files (`packages/sha256/xx/<sha>`): named by the sha256 the lock pins.
Files computed from verified blobs (libsolv's .solv cache, the Debian side index) are `derived`, keyed
by their inputs; a few named `pointers` remember which signed document a repository served last (for
--offline). Everything is written atomically (temporary sibling, then rename).

Nothing found in the store is trusted because of where it is: anyone who can write the cache (a
restored CI cache, a shared ~/.cache, a copied directory) could have put it there. Package files are
hashed against the lock whenever they are read (`copy_verified`). Metadata and derived files are
trusted only through a *seal*: a record, MAC'd with a secret kept outside every cache
(`seal_key`), that binds the file's identity — device, inode, size, mtime and ctime, one of which any
write or replacement changes — to the digest it had when verified; without a valid seal the file is
hashed again (or rebuilt, or fetched again). A cache writer cannot forge a seal, and a warm run pays a
stat() per file instead of re-reading hundreds of megabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from cernvm_build.errors import PackageChecksumError
from cernvm_build.util.files import atomic_write, sha256_file

CHUNK = 1 << 20
SEAL_KEY_ENV = "CERNVM_BUILD_SEAL_KEY"


@lru_cache(maxsize=None)
def _seal_key(path: str) -> bytes | None:
    p = Path(path)
    try:
        key = p.read_bytes()
        if len(key) == 32 and (p.stat().st_mode & 0o077) == 0:
            return key
    except OSError:
        pass
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        import secrets     # (imports random: only the first run ever makes a key)

        atomic_write(p, secrets.token_bytes(32), mode=0o600)
        return p.read_bytes()
    except OSError:
        return None


def seal_key() -> bytes | None:
    """The secret that makes the store's seals unforgeable: 32 random bytes kept outside every cache
    ($CERNVM_BUILD_SEAL_KEY, else $XDG_CONFIG_HOME/cernvm-build/seal.key; mode 0600), made on first
    use. None when it cannot be kept: then nothing is remembered and every use re-verifies."""
    path = os.environ.get(SEAL_KEY_ENV)
    if not path:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        path = os.path.join(base, "cernvm-build", "seal.key")
    return _seal_key(path)


def _identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


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
    """The store under ROOT (see the module's docstring)."""

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

    # ---- seals ---------------------------------------------------------------------------------
    def _seal_path(self, name: str) -> Path:
        return self.root / "sealed" / hashlib.sha256(name.encode()).hexdigest()

    def seal(self, name: str, data: bytes) -> None:
        """Remember DATA under NAME, MAC'd with the local secret (nothing is kept without one)."""
        key = seal_key()
        if key is None:
            return
        mac = hmac.new(key, name.encode() + b"\0" + data, "sha256").hexdigest()
        atomic_write(self._seal_path(name), mac.encode() + b"\n" + data)

    def unseal(self, name: str) -> bytes | None:
        """What seal(NAME, ...) remembered, or None when absent, forged or sealed with another secret."""
        key = seal_key()
        if key is None:
            return None
        try:
            mac, _, data = self._seal_path(name).read_bytes().partition(b"\n")
        except OSError:
            return None
        want = hmac.new(key, name.encode() + b"\0" + data, "sha256").hexdigest().encode()
        return data if hmac.compare_digest(mac, want) else None

    def remember(self, path: Path, sha256: str | None = None) -> str:
        """Seal PATH as verified now (its digest computed unless given); returns the digest."""
        st = os.stat(path)
        digest = sha256 or sha256_file(path)
        self.seal(f"file:{path}", f"{_identity(st)} {digest}".encode())
        return digest

    def trusted(self, path: Path, sha256: str | None = None) -> bool:
        """Is PATH still the file we verified? Yes when its seal matches its current identity; else,
        when SHA256 is known, when its content hashes to it (and it is sealed again). A file whose
        digest only a seal knew (derived, decompressed) is not trusted once its seal is gone."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        record = self.unseal(f"file:{path}")
        if record is not None:
            ident, _, digest = record.decode().partition(" ")
            if ident == _identity(st) and (sha256 is None or digest == sha256):
                return True
            sha256 = sha256 or digest
        if sha256 is None or sha256_file(path) != sha256:
            return False
        self.remember(path, sha256)
        return True

    @staticmethod
    def _tree_entries(root: Path, known: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
        """Regular files as [identity, digest], symlinks as ["link", target] (directories are implied).
        A file whose identity is the one KNOWN records is not read again: any write changes its ctime."""
        known = known or {}
        out: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(root))
                if p.is_symlink():
                    out[rel] = ["link", os.readlink(p)]
                elif p.is_file():
                    ident = _identity(os.stat(p))
                    seen = known.get(rel)
                    out[rel] = [ident, seen[1] if seen and seen[0] == ident else sha256_file(p)]
        return out

    def seal_tree(self, name: str, root: Path) -> None:
        """Seal every file's identity and digest and every symlink's target below ROOT (a derived
        directory: the boot kernel, the client toolchain tree)."""
        self.seal(f"tree:{name}", json.dumps(self._tree_entries(root), sort_keys=True).encode())

    def tree_intact(self, name: str, root: Path) -> bool:
        """ROOT holds exactly the files and symlinks sealed under NAME, with the sealed contents: files
        whose identity is unchanged cost a stat, others are hashed again."""
        record = self.unseal(f"tree:{name}")
        if record is None or not root.is_dir():
            return False
        sealed = json.loads(record)
        digests = {rel: e[1] for rel, e in sealed.items()}
        return {rel: e[1] for rel, e in self._tree_entries(root, sealed).items()} == digests

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
            wrong = _mismatch(pkg, tmp.stat().st_size, sha256_file(tmp))
            if wrong:
                raise PackageChecksumError(f"package {pkg.name} {pkg.evr} ({pkg.arch}) from {source}: {wrong} in "
                                           "the lock; the file was refused")
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
        import threading        # (fetch only: a lock does not need it)

        return d / f"{pkg.sha256}.{os.getpid()}.{threading.get_ident()}"


def _mismatch(pkg: Pinned, size: int, sha256: str) -> str | None:
    """How a file differs from the one the lock pins (size first: it is the cheaper tell), or None."""
    if size != pkg.size:
        return f"size {size} != {pkg.size}"
    if sha256 != pkg.sha256:
        return f"sha256 {sha256} != {pkg.sha256}"
    return None


def copy_verified(src: Path, pkg: Pinned, dest: Path) -> Path:
    """Copy a package file to DEST (a private work directory), hashing it on the way: the copy is used
    only if it is exactly the file the lock pins. What a builder reads is this copy, so nothing written
    to the cache after the check (or while it runs) reaches a tree or a maintainer script."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as f, open(dest, "wb") as out:
            while block := f.read(CHUNK):
                h.update(block)
                out.write(block)
                size += len(block)
    except OSError as exc:
        raise PackageChecksumError(f"package {pkg.name} {pkg.evr} ({pkg.arch}): cannot read {src}: "
                                   f"{exc.strerror}") from exc
    wrong = _mismatch(pkg, size, h.hexdigest())
    if wrong:
        dest.unlink(missing_ok=True)
        raise PackageChecksumError(f"package {pkg.name} {pkg.evr} ({pkg.arch}) in {src}: {wrong} in the lock; "
                                   "the stored file changed after it was verified, refusing it")
    return dest
