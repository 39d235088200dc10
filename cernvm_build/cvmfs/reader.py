"""Read a CernVM-FS repository (a stratum-0 directory or an HTTP URL) the way the client does.

Opening checks manifest signature (certificate `X` object), whitelist (name, expiry, master-key
signature, certificate fingerprint) before anything else; every object is hash-checked as it is read;
catalogs are fetched lazily, only along the paths that are looked up.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives.asymmetric import rsa

from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs.catalog import (
    COUNTER_NAMES,
    FLAG_DIR_NESTED_MOUNTPOINT,
    FLAG_DIR_NESTED_ROOT,
    CatalogReader,
    Counters,
    Entry,
)
from cernvm_build.cvmfs.history import TRUNK, Tag, read_history
from cernvm_build.cvmfs.manifest import (
    Manifest,
    Whitelist,
    load_certificate,
    verify_manifest_signature,
    verify_whitelist,
)
from cernvm_build.errors import CvmfsError, CvmfsIntegrityError


# ------------------------------------------------------------------------------------------------ sources
class Source:
    """Where repository files come from; get() returns bytes or raises a one-line CvmfsError."""

    location: str

    def get(self, rel: str) -> bytes:
        raise NotImplementedError


class LocalSource(Source):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(root)
        if not self.root.is_dir():
            raise CvmfsError(f"{root} is not a directory")

    def get(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError as exc:
            raise CvmfsIntegrityError(f"{rel} is missing from {self.location}") from exc
        except OSError as exc:
            raise CvmfsError(f"cannot read {self.root / rel}: {exc.strerror}") from exc


class HttpSource(Source):
    def __init__(self, url: str, timeout: float = 30):
        self.base = url.rstrip("/")
        self.location = self.base
        self.timeout = timeout

    def get(self, rel: str) -> bytes:
        url = f"{self.base}/{rel}"
        req = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise CvmfsIntegrityError(f"{rel} is missing from {self.location} (HTTP 404)") from exc
            raise CvmfsError(f"GET {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CvmfsError(f"cannot reach {url}: {reason}") from exc


def open_source(location: str | Path) -> Source:
    text = str(location)
    if text.startswith(("http://", "https://")):
        return HttpSource(text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return LocalSource(text)


def normpath(path: str) -> str:
    """Repository path form: '' for the root, else '/a/b' (no trailing slash)."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise CvmfsError(f"path {path!r} must not contain '..'")
    return "".join("/" + p for p in parts)


# --------------------------------------------------------------------------------------------- repository
@dataclass
class CatalogInfo:
    hash: str
    size: int
    path: str
    reader: CatalogReader


class Repository:
    """A verified, open repository. Use as a context manager (catalogs live in a temporary directory)."""

    def __init__(self, location: str | Path | Source, *, master_keys: list[rsa.RSAPublicKey] | None = None,
                 allow_expired_whitelist: bool = False, fqrn: str | None = None, tag: str | None = None,
                 check_whitelist: bool = True, now: int | None = None):
        self.source = location if isinstance(location, Source) else open_source(location)
        self._tmp = Path(tempfile.mkdtemp(prefix="cvmfs-read-"))
        self._catalogs: dict[str, CatalogReader] = {}
        self._verified: set[tuple[str, str]] = set()
        try:
            self._open(master_keys or [], allow_expired_whitelist, fqrn, tag, check_whitelist, now)
        except BaseException:
            self.close()
            raise

    def _open(self, master_keys, allow_expired, fqrn, tag, check_whitelist, now) -> None:
        where = self.source.location
        raw = self.source.get(".cvmfspublished")
        self.manifest, payload, digest, sig = Manifest.parse(raw, f".cvmfspublished of {where}")
        if fqrn and self.manifest.fqrn != fqrn:
            raise CvmfsError(f"{where} serves repository {self.manifest.fqrn!r}, not {fqrn!r}")
        self.fqrn = self.manifest.fqrn
        if not self.manifest.certificate:
            raise CvmfsIntegrityError(f".cvmfspublished of {where} names no certificate (X)")
        self.certificate = load_certificate(self.object(self.manifest.certificate, obj.SUFFIX_CERTIFICATE),
                                            f"certificate of {where}")
        verify_manifest_signature(payload, digest, sig, self.certificate, f".cvmfspublished of {where}")
        self.whitelist: Whitelist | None = None
        self.whitelist_signature_checked = bool(master_keys)
        if check_whitelist:
            self.whitelist = verify_whitelist(self.source.get(".cvmfswhitelist"), self.fqrn, self.certificate,
                                              master_keys, int(time.time()) if now is None else now,
                                              allow_expired)
        self.root_hash = self.manifest.root_catalog
        self.root_size = self.manifest.root_catalog_size
        self.tag: Tag | None = None
        if tag:
            found = {t.name: t for t in self.tags()}
            if tag not in found:
                raise CvmfsError(f"repository {self.fqrn} has no tag {tag!r} "
                                 f"(known: {', '.join(sorted(found)) or 'none'})")
            self.tag = found[tag]
            self.root_hash, self.root_size = self.tag.hash, self.tag.size

    def close(self) -> None:
        for c in self._catalogs.values():
            c.close()
        self._catalogs.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # objects ----------------------------------------------------------------------------------------
    def blob(self, hexdigest: str, suffix: str = "") -> bytes:
        """Compressed bytes of an object, hash-checked."""
        rel = obj.object_relpath(hexdigest, suffix)
        data = self.source.get(rel)
        obj.verify_blob(data, hexdigest, f"object {rel} of {self.source.location}")
        self._verified.add((hexdigest, suffix))
        return data

    def object(self, hexdigest: str, suffix: str = "") -> bytes:
        rel = obj.object_relpath(hexdigest, suffix)
        return obj.inflate(self.blob(hexdigest, suffix), f"object {rel} of {self.source.location}")

    def catalog(self, hexdigest: str) -> CatalogReader:
        cat = self._catalogs.get(hexdigest)
        if cat is None:
            path = self._tmp / f"{hexdigest}.db"
            path.write_bytes(self.object(hexdigest, obj.SUFFIX_CATALOG))
            cat = CatalogReader(path, f"catalog {hexdigest}")
            self._catalogs[hexdigest] = cat
        return cat

    def history(self) -> tuple[dict[str, str], list[Tag]]:
        if not self.manifest.history:
            return {}, []
        path = self._tmp / f"{self.manifest.history}.history"
        if not path.exists():
            path.write_bytes(self.object(self.manifest.history, obj.SUFFIX_HISTORY))
        return read_history(path, f"history {self.manifest.history}")

    def tags(self) -> list[Tag]:
        return self.history()[1]

    # namespace --------------------------------------------------------------------------------------
    @property
    def root_catalog(self) -> CatalogReader:
        return self.catalog(self.root_hash)

    def catalog_for(self, path: str) -> CatalogReader:
        """The catalog holding PATH, descending through nested catalogs on the way (lazy fetches)."""
        path = normpath(path)
        cat = self.root_catalog
        while True:
            for ref in cat.nested():
                if path == ref.path or path.startswith(ref.path + "/"):
                    cat = self.catalog(ref.hash)
                    break
            else:
                return cat

    def lookup(self, path: str) -> Entry:
        path = normpath(path)
        entry = self.catalog_for(path).lookup(path)
        if entry is None:
            raise CvmfsError(f"{path or '/'}: no such file or directory in {self.fqrn}")
        return entry

    def listdir(self, path: str) -> list[Entry]:
        entry = self.lookup(path)
        if not entry.is_dir:
            raise CvmfsError(f"{entry.path}: not a directory")
        return self.catalog_for(entry.path).listing(entry.path)

    def iter_content(self, entry: Entry) -> Iterator[bytes]:
        """The bytes of a regular file, piece by piece, each piece hash-checked."""
        if not entry.is_regular:
            raise CvmfsError(f"{entry.path}: not a regular file")
        what = f"{entry.path} in {self.fqrn}"
        if entry.is_chunked:
            expected = 0
            for c in entry.chunks:
                if c.offset != expected:
                    raise CvmfsIntegrityError(f"{what}: misaligned chunk at offset {c.offset}")
                data = self._content(c.hash, obj.SUFFIX_PARTIAL, entry.compressed)
                if len(data) != c.size:
                    raise CvmfsIntegrityError(f"{what}: chunk at {c.offset} has {len(data)} bytes, not {c.size}")
                expected += c.size
                yield data
            if expected != entry.size:
                raise CvmfsIntegrityError(f"{what}: chunks cover {expected} bytes, file has {entry.size}")
            return
        if entry.hash is None:
            raise CvmfsIntegrityError(f"{what}: regular file without content hash")
        data = self._content(entry.hash, obj.SUFFIX_NONE, entry.compressed)
        if len(data) != entry.size:
            raise CvmfsIntegrityError(f"{what}: content has {len(data)} bytes, catalog says {entry.size}")
        yield data

    def _content(self, hexdigest: str, suffix: str, compressed: bool) -> bytes:
        return self.object(hexdigest, suffix) if compressed else self.blob(hexdigest, suffix)

    def resolve(self, path: str, follow_last: bool = True, max_links: int = 40) -> Entry:
        """Look PATH up as the kernel would: symbolic links inside the repository are followed
        (relative ones from their directory, `..` resolved lexically, never above the root)."""
        todo = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        links = 0
        entry = self.lookup("")
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                entry = self.lookup("/".join(done))
                continue
            entry = self.lookup("/".join(done + [part]))
            if entry.is_symlink and (todo or follow_last):
                links += 1
                if links > max_links:
                    raise CvmfsError(f"{path}: too many levels of symbolic links")
                target = entry.symlink or ""
                todo = [p for p in target.split("/") if p and p != "."] + todo
                if target.startswith("/"):
                    done = []
                continue
            done.append(part)
        return entry

    def read(self, path: str, follow: bool = True) -> bytes:
        entry = self.resolve(path) if follow else self.lookup(path)
        if entry.is_symlink:
            raise CvmfsError(f"{entry.path}: is a symbolic link to {entry.symlink}")
        return b"".join(self.iter_content(entry))

    def walk(self, path: str = "") -> Iterator[Entry]:
        """Every entry below PATH (inclusive), depth-first in name order."""
        stack = [self.lookup(path)]
        while stack:
            e = stack.pop()
            yield e
            if e.is_dir:
                stack.extend(reversed(self.listdir(e.path)))

    def catalogs(self) -> Iterator[CatalogInfo]:
        """Every catalog of the snapshot, parents before children."""
        stack = [(self.root_hash, self.root_size or 0, "")]
        while stack:
            h, size, path = stack.pop()
            cat = self.catalog(h)
            yield CatalogInfo(h, size, path, cat)
            stack.extend((n.hash, n.size, n.path) for n in reversed(cat.nested()))


# ------------------------------------------------------------------------------------------------ verify
@dataclass
class VerifyReport:
    catalogs: int = 0
    entries: int = 0
    files: int = 0
    objects: int = 0
    bytes: int = 0
    tags: int = 0
    problems: list[str] = field(default_factory=list)


def verify_repository(repo: Repository) -> VerifyReport:
    """Full check of one snapshot: catalogs, counters, transition points and every content object."""
    rep = VerifyReport()
    seen: set[tuple[str, str]] = set()
    children_counters: dict[str, list[Counters]] = {}
    infos = list(repo.catalogs())
    by_path = {i.path: i for i in infos}
    for info in infos:
        cat = info.reader
        rep.catalogs += 1
        where = f"catalog {info.hash} ({info.path or '/'})"
        if cat.properties.get("schema") != "2.5":
            raise CvmfsIntegrityError(f"{where} has schema {cat.properties.get('schema')}, expected 2.5")
        if info.size and info.path:
            size = (repo._tmp / f"{info.hash}.db").stat().st_size
            if size != info.size:
                raise CvmfsIntegrityError(f"{where} is {size} bytes, its parent records {info.size}")
        entries = cat.all_entries()
        if len(entries) != cat.row_count():
            raise CvmfsIntegrityError(f"{where} has {cat.row_count() - len(entries)} unreachable rows")
        root = entries[0]
        if info.path and not root.flags & FLAG_DIR_NESTED_ROOT:
            raise CvmfsIntegrityError(f"{where}: root entry is not marked as nested root")
        counters = Counters()
        for e in entries:
            rep.entries += 1
            counters.add_entry(e)
            if e.is_nested_mountpoint and e.path not in {n.path for n in cat.nested()}:
                raise CvmfsIntegrityError(f"{where}: mountpoint {e.path} has no nested catalog")
            if e.is_regular:
                rep.files += 1
                pieces = [(c.hash, obj.SUFFIX_PARTIAL) for c in e.chunks] if e.is_chunked else \
                    [(e.hash or "", obj.SUFFIX_NONE)]
                if all(p in seen for p in pieces):
                    continue
                for data in repo.iter_content(e):
                    rep.bytes += len(data)
                for p in pieces:
                    if p not in seen:
                        seen.add(p)
                        rep.objects += 1
        counters.self_["nested"] = len(cat.nested())
        for n in cat.nested():
            mp = cat.lookup(n.path)
            if mp is None or not mp.flags & FLAG_DIR_NESTED_MOUNTPOINT:
                raise CvmfsIntegrityError(f"{where}: nested catalog {n.path} has no mountpoint entry")
        stats = cat.statistics()
        if stats:
            stored = Counters.from_rows(stats)
            for k in COUNTER_NAMES:
                if f"self_{k}" in stats and stored.self_[k] != counters.self_[k]:
                    raise CvmfsIntegrityError(f"{where}: statistics self_{k}={stored.self_[k]}, "
                                              f"counted {counters.self_[k]}")
            children_counters[info.path] = [stored]
        elif cat.schema_revision >= 5:
            raise CvmfsIntegrityError(f"{where}: statistics table is empty")
    # subtree counters: sum of the direct children's self+subtree
    for info in infos:
        stats = info.reader.statistics()
        if not stats:
            continue
        expect = Counters()
        for n in info.reader.nested():
            child = by_path.get(n.path)
            if child and child.reader.statistics():
                expect.add_child(Counters.from_rows(child.reader.statistics()))
        got = Counters.from_rows(stats)
        for k in COUNTER_NAMES:
            if f"subtree_{k}" in stats and got.subtree[k] != expect.subtree[k]:
                raise CvmfsIntegrityError(f"catalog {info.hash} ({info.path or '/'}): statistics subtree_{k}="
                                          f"{got.subtree[k]}, nested catalogs sum to {expect.subtree[k]}")
    tags = repo.tags()
    for t in tags:
        repo.blob(t.hash, obj.SUFFIX_CATALOG)
    rep.tags = len(tags)
    check_reflog(repo, rep)
    if tags and repo.tag is None:
        trunk = {t.name: t for t in tags}.get(TRUNK)
        if trunk and trunk.hash != repo.manifest.root_catalog:
            rep.problems.append(f"tag trunk points to {trunk.hash}, manifest to {repo.manifest.root_catalog}")
    return rep


STRATUM1_MARKER = ".cvmfs_last_snapshot"


def check_reflog(repo: Repository, rep: VerifyReport) -> None:
    """As `cvmfs_server check`: with a Y line, `.cvmfsreflog` must exist, hash to Y and list the manifest's
    C, X, H and M. A stratum-1 (it serves .cvmfs_last_snapshot) keeps a reflog of its own while serving the
    stratum-0's signed manifest, whose Y names the stratum-0's reflog: there only the listing is checked.
    A stratum-0 reflog that lists everything but does not hash to Y is reported, not refused: a publisher
    killed between installing the reflog and the manifest leaves exactly that (the next publish repairs it)."""
    from cernvm_build.cvmfs import reflog as rl

    y = repo.manifest.reflog
    if not y or repo.tag is not None:
        return
    where = f"{rl.REFLOG_FILE} of {repo.source.location}"
    raw = repo.source.get(rl.REFLOG_FILE)
    path = repo._tmp / "reflog.db"
    path.write_bytes(raw)
    _, refs = rl.read_reflog(path, where)
    missing = rl.missing_from(refs, repo.manifest)
    if missing:
        raise CvmfsIntegrityError(f"{where} does not list the manifest's {', '.join(missing)}")
    actual = hashlib.sha1(raw).hexdigest()
    if actual == y:
        return
    try:
        repo.source.get(STRATUM1_MARKER)
        return  # a replica: its reflog is its own
    except CvmfsError:
        pass
    rep.problems.append(f"{where} has SHA-1 {actual}, the manifest names {y} (stale reflog: was a publisher "
                        "killed before installing its manifest?)")


def mode_string(mode: int) -> str:
    return stat.filemode(mode)
