"""The closure lock: every package pinned, the contract between resolving and everything after it.

The file is canonical TOML written by our own small emitter (not a general TOML library) so that the
same closure gives the same bytes across library versions, years apart. Keys are in a fixed order,
packages sorted by (name, arch), lists sorted, no timestamps but the metadata's own dates.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from cernvm_build.errors import LockError
from cernvm_build.util.files import atomic_write

LOCK_VERSION = 1


@dataclass(frozen=True)
class IndexFile:
    """One metadata file a repository's signed document lists (Packages, primary.xml, ...)."""

    path: str
    sha256: str
    size: int = 0


@dataclass(frozen=True)
class RepositoryRecord:
    """What a closure was resolved against, so it can be checked and re-fetched years later."""

    name: str
    url: str
    metadata: str                 # path of the signed document below url (InRelease, repodata/repomd.xml)
    metadata_sha256: str
    date: str = ""                # Debian Release Date:, rpm-md revision timestamp
    revision: str = ""            # rpm-md <revision>
    suite: str = ""
    components: tuple[str, ...] = ()
    key_fingerprints: tuple[str, ...] = ()
    indexes: tuple[IndexFile, ...] = ()


@dataclass(frozen=True)
class LockedPackage:
    """One pinned package: exactly which file, from which repository, and what it needs in the closure."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    repository: str
    location: str
    size: int
    sha256: str
    depends: tuple[str, ...] = ()

    @property
    def evr(self) -> str:
        """Version string in the flavour's usual spelling: [epoch:]version[-release]."""
        s = f"{self.epoch}:" if self.epoch else ""
        s += self.version
        return f"{s}-{self.release}" if self.release else s

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.arch)


@dataclass(frozen=True)
class Solver:
    """Who resolved the closure and how (the [solver] table)."""

    name: str = "libsolv"
    version: str = ""
    policy: str = ""              # "apt" (Debian: apt's choices) or "libsolv"
    weak: bool = False


@dataclass(frozen=True)
class Delta:
    """A local closure's difference from its base (policy diverge/rebase): itself part of the lock."""

    base_name: str
    base_digest: str
    add: tuple[str, ...] = ()        # shopping-list entries added locally
    remove: tuple[str, ...] = ()     # base packages removed locally
    upgrade: tuple[str, ...] = ()    # base packages moved to the newest available version
    local: tuple[str, ...] = ()      # packages of the local closure not in the base at that version


@dataclass(frozen=True)
class Closure:
    """A whole lock: the recipe it came from, the metadata it was resolved against, every package."""

    name: str
    flavour: str
    arch: str
    recipe_digest: str
    solver: Solver
    requests: tuple[str, ...]
    roots: tuple[str, ...]
    repositories: tuple[RepositoryRecord, ...]
    packages: tuple[LockedPackage, ...]
    lock_version: int = LOCK_VERSION
    delta: Delta | None = None

    def package(self, name: str) -> LockedPackage | None:
        for p in self.packages:
            if p.name == name:
                return p
        return None

    def repository(self, name: str) -> RepositoryRecord | None:
        return next((r for r in self.repositories if r.name == name), None)

    def total_size(self) -> int:
        return sum(p.size for p in self.packages)

    def canonical(self) -> "Closure":
        """Sorted everything: the form that is written (records already in that form are kept as
        they are: a lock is made canonical when resolved and again when written, and the second
        time returns the same object, marked as canonical when the first made it)."""
        if self.__dict__.get("_canonical"):
            return self
        pkgs = tuple(sorted((_canonical_package(p) for p in self.packages), key=lambda p: (p.name, p.arch, p.evr)))
        repos = tuple(replace(r, indexes=tuple(sorted(r.indexes, key=lambda i: i.path)),
                              key_fingerprints=tuple(sorted(set(r.key_fingerprints))))
                      for r in self.repositories)
        out = replace(self, packages=pkgs, repositories=repos, roots=tuple(sorted(set(self.roots))))
        out.__dict__["_canonical"] = True      # (not a field: replace() and loads() make unmarked copies)
        return out


def _canonical_package(p: LockedPackage) -> LockedPackage:
    depends = tuple(sorted(set(p.depends)))
    return p if depends == p.depends else replace(p, depends=depends)


# ---- canonical TOML ------------------------------------------------------------------------------

_PLAIN = re.compile(r'^[^"\\\x00-\x1f\x7f]*$')


def _toml_str(s: str) -> str:
    if _PLAIN.match(s):
        return f'"{s}"'
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _quoted(s: str) -> str:
    """_toml_str of a string _PLAIN matches."""
    return f'"{s}"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} into a lock")


def _kv(lines: list[str], key: str, value: Any) -> None:
    lines.append(f"{key} = {_toml_value(value)}")


def dumps(closure: Closure) -> str:
    """The canonical text of a lock."""
    c = closure.canonical()
    out: list[str] = ["# cernvm-build closure lock: generated, do not edit (see `cernvm-build show`)"]
    _kv(out, "lock-version", c.lock_version)
    _kv(out, "name", c.name)
    _kv(out, "flavour", c.flavour)
    _kv(out, "arch", c.arch)
    _kv(out, "recipe-digest", c.recipe_digest)
    _kv(out, "requests", list(c.requests))
    _kv(out, "roots", list(c.roots))
    out += ["", "[solver]"]
    _kv(out, "name", c.solver.name)
    _kv(out, "version", c.solver.version)
    _kv(out, "policy", c.solver.policy)
    _kv(out, "weak", c.solver.weak)
    if c.delta is not None:
        out += ["", "[delta]"]
        _kv(out, "base-name", c.delta.base_name)
        _kv(out, "base-digest", c.delta.base_digest)
        _kv(out, "add", list(c.delta.add))
        _kv(out, "remove", sorted(c.delta.remove))
        _kv(out, "upgrade", sorted(c.delta.upgrade))
        _kv(out, "local", sorted(c.delta.local))
    for r in c.repositories:
        out += ["", "[[repository]]"]
        _kv(out, "name", r.name)
        _kv(out, "url", r.url)
        if r.suite:
            _kv(out, "suite", r.suite)
        if r.components:
            _kv(out, "components", list(r.components))
        _kv(out, "metadata", r.metadata)
        _kv(out, "metadata-sha256", r.metadata_sha256)
        if r.date:
            _kv(out, "date", r.date)
        if r.revision:
            _kv(out, "revision", r.revision)
        _kv(out, "key-fingerprints", list(r.key_fingerprints))
        for i in r.indexes:
            out += ["", "[[repository.index]]"]
            _kv(out, "path", i.path)
            _kv(out, "sha256", i.sha256)
            _kv(out, "size", i.size)
    plain = _PLAIN.match
    for p in c.packages:       # the bulk of a lock: written directly, same format as _kv
        if plain(f"{p.name}{p.version}{p.release}{p.arch}{p.repository}{p.location}{p.sha256}{''.join(p.depends)}"):
            q = _quoted                 # (the usual case: no string of the package needs escapes)
            deps = '"' + '", "'.join(p.depends) + '"' if p.depends else ""
        else:
            q = _toml_str
            deps = ", ".join(q(d) for d in p.depends)
        out.append(f"\n[[package]]\nname = {q(p.name)}\nepoch = {int(p.epoch)}\nversion = {q(p.version)}\n"
                   f"release = {q(p.release)}\narch = {q(p.arch)}\nrepository = {q(p.repository)}\n"
                   f"location = {q(p.location)}\nsize = {int(p.size)}\nsha256 = {q(p.sha256)}\n"
                   f"depends = [{deps}]")
    return "\n".join(out) + "\n"


def digest(text: str | bytes) -> str:
    """The lock digest used everywhere (snapshot tags, signatures): sha256 over the file's bytes."""
    if isinstance(text, str):
        text = text.encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def write_lock(closure: Closure, path: str | Path) -> str:
    """Write the canonical lock atomically; returns its digest. A file that already holds exactly
    these bytes (mode 0644, as written) is left as it is, like the pipeline's lock stage does: a
    re-lock whose closure has not changed costs no fsync and rename (and keeps the file's mtime)."""
    data = dumps(closure).encode()
    if not _holds(path, data):
        atomic_write(path, data)
    return digest(data)


def _holds(path: str | Path, data: bytes) -> bool:
    """Is PATH a regular file of mode 0644 whose bytes are DATA?"""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o644 or st.st_size != len(data):
            return False
        return os.read(fd, len(data) + 1) == data
    finally:
        os.close(fd)


# ---- reading -------------------------------------------------------------------------------------

class _Reader:
    def __init__(self, where: str):
        self.where = where

    def get(self, table: dict, key: str, kind: type, ctx: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                raise LockError(f"{self.where}: {ctx}: missing key '{key}'")
            return default
        v = table[key]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise LockError(f"{self.where}: {ctx}: key '{key}' has the wrong type ({type(v).__name__})")
        return v

    def strs(self, table: dict, key: str, ctx: str) -> tuple[str, ...]:
        v = self.get(table, key, list, ctx, [])
        if not all(isinstance(x, str) for x in v):
            raise LockError(f"{self.where}: {ctx}: key '{key}' must list strings")
        return tuple(v)


def loads(text: str, where: str = "<lock>") -> Closure:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{where}: not valid TOML: {exc}") from exc
    r = _Reader(where)
    version = r.get(data, "lock-version", int, "top level")
    if version != LOCK_VERSION:
        raise LockError(f"{where}: lock-version {version} is not supported (this tool reads {LOCK_VERSION})")
    s = r.get(data, "solver", dict, "top level")
    solver = Solver(r.get(s, "name", str, "solver"), r.get(s, "version", str, "solver", ""),
                    r.get(s, "policy", str, "solver", ""), r.get(s, "weak", bool, "solver", False))
    delta = None
    if "delta" in data:
        t = r.get(data, "delta", dict, "top level")
        delta = Delta(r.get(t, "base-name", str, "delta"), r.get(t, "base-digest", str, "delta"),
                      r.strs(t, "add", "delta"), r.strs(t, "remove", "delta"), r.strs(t, "upgrade", "delta"),
                      r.strs(t, "local", "delta"))
    repos = []
    for i, t in enumerate(r.get(data, "repository", list, "top level", [])):
        ctx = f"repository[{i}]"
        idx = tuple(IndexFile(r.get(x, "path", str, ctx + ".index"), r.get(x, "sha256", str, ctx + ".index"),
                              r.get(x, "size", int, ctx + ".index", 0))
                    for x in r.get(t, "index", list, ctx, []))
        repos.append(RepositoryRecord(
            name=r.get(t, "name", str, ctx), url=r.get(t, "url", str, ctx),
            metadata=r.get(t, "metadata", str, ctx), metadata_sha256=r.get(t, "metadata-sha256", str, ctx),
            date=r.get(t, "date", str, ctx, ""), revision=r.get(t, "revision", str, ctx, ""),
            suite=r.get(t, "suite", str, ctx, ""), components=r.strs(t, "components", ctx),
            key_fingerprints=r.strs(t, "key-fingerprints", ctx), indexes=idx))
    repo_names = {x.name for x in repos}
    pkgs = []
    for i, t in enumerate(r.get(data, "package", list, "top level", [])):
        ctx = f"package[{i}]"
        p = LockedPackage(
            name=r.get(t, "name", str, ctx), epoch=r.get(t, "epoch", int, ctx),
            version=r.get(t, "version", str, ctx), release=r.get(t, "release", str, ctx),
            arch=r.get(t, "arch", str, ctx), repository=r.get(t, "repository", str, ctx),
            location=r.get(t, "location", str, ctx), size=r.get(t, "size", int, ctx),
            sha256=r.get(t, "sha256", str, ctx), depends=r.strs(t, "depends", ctx))
        if p.repository not in repo_names:
            raise LockError(f"{where}: package {p.name}: repository '{p.repository}' is not listed in the lock")
        if len(p.sha256) != 64 or any(c not in "0123456789abcdef" for c in p.sha256):
            raise LockError(f"{where}: package {p.name}: sha256 {p.sha256!r} is not a hex sha256")
        pkgs.append(p)
    names = {p.name for p in pkgs}
    for p in pkgs:
        missing = [d for d in p.depends if d not in names]
        if missing:
            raise LockError(f"{where}: package {p.name} depends on '{missing[0]}', which is not in the closure")
    return Closure(
        name=r.get(data, "name", str, "top level"), flavour=r.get(data, "flavour", str, "top level"),
        arch=r.get(data, "arch", str, "top level"), recipe_digest=r.get(data, "recipe-digest", str, "top level"),
        solver=solver, requests=r.strs(data, "requests", "top level"), roots=r.strs(data, "roots", "top level"),
        repositories=tuple(repos), packages=tuple(pkgs), lock_version=version, delta=delta)


def read_lock(path: str | Path) -> Closure:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockError(f"{path}: cannot read lock: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise LockError(f"{path}: cannot read lock: not UTF-8 text ({exc.reason})") from exc
    return loads(text, str(path))


def split_evr(evr: str) -> tuple[int, str, str]:
    """'1:2.3-4' -> (1, '2.3', '4'); Debian native versions and rpm alike (release after the last '-')."""
    epoch = 0
    if ":" in evr:
        e, evr = evr.split(":", 1)
        epoch = int(e) if e.isdigit() else 0
    version, sep, release = evr.rpartition("-")
    if not sep:
        return epoch, evr, ""
    return epoch, version, release


def lock_epoch(closure: Closure) -> int:
    """The newest metadata date in the lock (Debian Release Date, rpm-md revision) as a Unix time:
    the default SOURCE_DATE_EPOCH of everything built from the lock, so no stage needs the clock."""
    import email.utils

    best = 0
    for r in closure.repositories:
        t = 0
        if r.date:
            try:
                t = int(email.utils.parsedate_to_datetime(r.date).timestamp())
            except (TypeError, ValueError):
                if r.date.isdigit():
                    t = int(r.date)
        if not t and r.revision.isdigit():
            t = int(r.revision)
        best = max(best, t)
    return best


def names(packages: Iterable[LockedPackage]) -> list[str]:
    return sorted(p.name for p in packages)
