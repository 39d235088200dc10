"""Stratum-1 replication: copy a repository served over HTTP into a local directory, as `cvmfs_server
add-replica` + `snapshot` do, without ever serving a manifest whose objects are not all present.

The source is hostile until verified. Order of a run:

1. lock the replica (flock on data/txn/publish.lock: one writer at a time, a second run is 'busy');
2. fetch `.cvmfspublished`, its certificate (`X`) and `.cvmfswhitelist`, each size-bounded; verify the
   manifest signature with the certificate and the whitelist with the master key(s) (refusing an expired
   whitelist unless asked), and refuse a source older than the replica (rollback);
3. fetch the history (`H`) and meta-info (`M`); the catalogs to copy are the manifest's root and the root
   of every named tag;
4. walk the catalogs level by level (nested ones recursively) in a bounded thread pool, each verified
   against its name and its recorded size; a catalog already present in the replica is not walked: it is
   only ever stored after its whole subtree (see 6), so its presence proves the subtree complete, which
   is what makes a later run fetch only what is new;
5. fetch every missing file object and chunk in the pool: each is hash-checked against its name before it
   is stored (temp file in the object's own directory + rename), bounded by the size its catalog records;
6. store the catalogs children first, then certificate, history, meta-info; sync;
7. write the replica's own `.cvmfsreflog`, copy `.cvmfswhitelist`, write `.cvmfs_last_snapshot`, and
   install `.cvmfspublished` LAST.

Any failure (HTTP error, timeout, deadline, oversized or corrupt response) aborts the run before step 7
with one line naming the object; the previous manifest stays in place. A timeout is never taken for an
absent object (the reference replicator once advanced a stratum-1 to a revision whose root catalog it had
failed to fetch: cvmfs issues 4270/4272).

Objects present under their name are trusted without re-reading: they were hash-checked before the
rename that gave them that name, and every run syncs before installing a manifest. The one gap is a
machine crash during a run (renamed but unsynced files may come back truncated), so a run leaves a marker
(data/txn/replicate.dirty) until its final sync; the next run re-hashes every object modified since the
marker was created and walks (rather than trusts) catalogs stored since then.

The replica serves the stratum-0's signed manifest unchanged, so its `Y` line names the stratum-0's
reflog; the replica's own `.cvmfsreflog` (what it stored: catalogs, certificates, histories, meta-info)
differs from it, as on a reference stratum-1 (which keeps the checksum aside in reflog.chksum).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
import zlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs import reflog as rl
from cernvm_build.cvmfs.catalog import (
    FLAG_COMPRESSION_MASK,
    FLAG_COMPRESSION_SHIFT,
    FLAG_FILE_EXTERNAL,
    FLAG_HASH_MASK,
    FLAG_HASH_SHIFT,
    CatalogReader,
)
from cernvm_build.cvmfs.history import read_history
from cernvm_build.cvmfs.manifest import (
    Manifest,
    load_certificate,
    verify_manifest_signature,
    verify_whitelist,
)
from cernvm_build.cvmfs.publish import repository_lock
from cernvm_build.errors import CvmfsError
from cernvm_build.util.files import atomic_write

MAX_MANIFEST = 64 << 10  # the client itself reads at most 4 KiB of a manifest
MAX_WHITELIST = 1 << 20
MAX_CERTIFICATE = 1 << 20
MAX_METAINFO = 4 << 20
MAX_HISTORY = 256 << 20
MAX_UNKNOWN_CATALOG = 2 << 30  # a root catalog whose size the manifest (B) or tag does not record
DEFAULT_TIMEOUT = 30.0  # connect and per-read timeout
DEFAULT_OBJECT_DEADLINE = 900.0  # one response, however it trickles
DEFAULT_DEADLINE = 24 * 3600.0  # the whole run
DIRTY_MARKER = "replicate.dirty"
LAST_SNAPSHOT = ".cvmfs_last_snapshot"
_HASH_SUFFIX = {1: "", 2: "-rmd160", 3: "-shake128"}  # algorithm id -> textual suffix (SHA-1: none)


class ReplicateError(CvmfsError):
    """Replication failed; the message names the object. The replica still serves its previous revision."""


@dataclass
class ReplicateResult:
    fqrn: str
    revision: int
    root_hash: str
    previous_revision: int | None
    tags: int = 0
    catalogs_walked: int = 0  # catalogs read this run (present ones are not walked: their subtree is complete)
    objects_fetched: int = 0  # objects transferred and stored (catalogs, files, chunks, X, H, M)
    bytes_fetched: int = 0
    objects_present: int = 0  # needed objects found in the replica already
    objects_reverified: int = 0  # present objects re-hashed after an interrupted run
    seconds: float = 0.0
    up_to_date: bool = False


def _compressed_bound(size: int) -> int:
    """Largest zlib stream for SIZE input bytes (deflate stored blocks + header/trailer), generously."""
    return size + (size >> 10) + 1024


class _Http:
    """GET with connect/read timeouts, a per-response and an overall deadline and a size bound; one
    persistent connection per worker thread."""

    def __init__(self, base: str, timeout: float, object_deadline: float, deadline_at: float):
        u = urllib.parse.urlsplit(base.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise CvmfsError(f"replicate: source must be an http:// or https:// URL, not {base!r}")
        self.base, self.scheme, self.host, self.port, self.prefix = base.rstrip("/"), u.scheme, u.hostname, \
            u.port, u.path
        self.timeout, self.object_deadline, self.deadline_at = timeout, object_deadline, deadline_at
        self._local = threading.local()
        self.bytes = 0
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            c = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def get(self, rel: str, limit: int) -> bytes:
        url = f"{self.base}/{rel}"
        start = time.monotonic()
        if start >= self.deadline_at:
            raise ReplicateError(f"{rel}: not fetched, the replication deadline has passed")
        deadline = min(start + self.object_deadline, self.deadline_at)
        try:
            c = self._conn()
            c.timeout = min(self.timeout, max(0.01, deadline - start))
            if c.sock is not None:
                c.sock.settimeout(c.timeout)
            c.request("GET", f"{self.prefix}/{rel}", headers={"Accept-Encoding": "identity"})
            sock = c.sock  # kept: an HTTP/1.0 response detaches it from the connection
            resp = c.getresponse()
            if resp.status != 200:
                self._drop()
                what = "missing from the source (HTTP 404)" if resp.status == 404 else f"HTTP {resp.status} {resp.reason}"
                raise ReplicateError(f"{rel}: {what} from {url}")
            enc = resp.getheader("Content-Encoding", "identity").lower()
            if enc not in ("", "identity"):
                raise ReplicateError(f"{rel}: the source sent it with Content-Encoding {enc}; objects must be served as is")
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise ReplicateError(f"{rel}: the source announces {length} bytes, more than the {limit} it can have")
            parts, total = [], 0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise ReplicateError(f"{rel}: not complete after {now - start:.1f}s ({total} bytes): "
                                         f"deadline exceeded, source too slow")
                if sock is not None:
                    sock.settimeout(min(self.timeout, max(0.01, deadline - now)))
                piece = resp.read1(1 << 16) if hasattr(resp, "read1") else resp.read(1 << 16)
                if not piece:
                    break
                total += len(piece)
                if total > limit:
                    raise ReplicateError(f"{rel}: the source sent more than the {limit} bytes it can have")
                parts.append(piece)
            if length is not None and length.isdigit() and total != int(length):
                raise ReplicateError(f"{rel}: truncated response ({total} of {length} bytes)")
            resp.read()       # finishes the response, so a keep-alive connection can take the next request
        except ReplicateError:
            self._drop()
            raise
        except (socket.timeout, TimeoutError):
            self._drop()
            spent = time.monotonic() - start
            if time.monotonic() >= deadline - 0.05:
                raise ReplicateError(f"{rel}: not complete after {spent:.1f}s: deadline exceeded, source too slow "
                                     f"({url})") from None
            raise ReplicateError(f"{rel}: timed out after {spent:.1f}s without data from {url}") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise ReplicateError(f"{rel}: cannot fetch {url}: {exc or type(exc).__name__}") from None
        with self._lock:
            self.bytes += total
        return b"".join(parts)


def _inflate_bounded(blob: bytes, limit: int, rel: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(blob, limit + 1)
    except zlib.error as exc:
        raise ReplicateError(f"{rel}: not a valid zlib stream: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ReplicateError(f"{rel}: inflates to more than the {limit} bytes recorded for it")
    return out


class _Replica:
    """The destination directory: which objects it has, atomic stores, the crash marker."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.present: set[str] = set()
        self.dirty_since_ns: int | None = None
        self._lock = threading.Lock()

    def scan(self) -> None:
        for i in range(256):
            sub = self.data / f"{i:02x}"
            sub.mkdir(parents=True, exist_ok=True)
            with os.scandir(sub) as it:
                for e in it:
                    if e.name.startswith("."):  # a temp file of a killed run (we hold the lock)
                        try:
                            os.unlink(e.path)
                        except OSError:
                            pass
                    else:
                        self.present.add(f"data/{sub.name}/{e.name}")

    def has(self, rel: str) -> bool:
        return rel in self.present

    def dirty(self, rel: str) -> bool:
        if self.dirty_since_ns is None:
            return False
        try:
            return os.stat(self.root / rel).st_mtime_ns >= self.dirty_since_ns
        except FileNotFoundError:
            return True

    def store(self, rel: str, blob: bytes) -> None:
        dest = self.root / rel
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, dest)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise ReplicateError(f"{rel}: cannot store it in {self.root}: {exc.strerror}") from None
        with self._lock:
            self.present.add(rel)


def replicate(source_url: str, dest: str | os.PathLike, master_keys: list[rsa.RSAPublicKey], *,
              allow_expired_whitelist: bool = False, workers: int = 8, wait_lock: float = 0.0,
              timeout: float = DEFAULT_TIMEOUT, object_deadline: float = DEFAULT_OBJECT_DEADLINE,
              deadline: float = DEFAULT_DEADLINE, now: int | None = None) -> ReplicateResult:
    """Bring the stratum-1 at DEST up to the revision SOURCE_URL serves (and all its named tags)."""
    if not master_keys:
        raise CvmfsError("replicate: a master public key (--pubkey) is required to trust the source")
    started = time.monotonic()
    dest = Path(dest)
    http_ = _Http(source_url, timeout, object_deadline, started + deadline)
    (dest / "data" / "txn").mkdir(parents=True, exist_ok=True)
    with repository_lock(dest, wait_lock):
        replica = _Replica(dest)
        res = _run(http_, replica, master_keys, allow_expired_whitelist, max(1, workers),
                   int(time.time()) if now is None else now)
        res.bytes_fetched = http_.bytes
        res.seconds = time.monotonic() - started
        return res


def _catalog_objects(cat: CatalogReader, where: str) -> dict[str, int]:
    """rel path -> size bound of every file object and chunk a catalog names (external data excluded)."""
    out: dict[str, int] = {}

    def name(raw: bytes, flags: int) -> str:
        alg = ((flags & FLAG_HASH_MASK) >> FLAG_HASH_SHIFT) + 1
        if alg not in _HASH_SUFFIX:
            raise ReplicateError(f"{where}: unknown hash algorithm id {alg}")
        return raw.hex() + _HASH_SUFFIX[alg]

    def bound(size: int, flags: int) -> int:
        compressed = ((flags & FLAG_COMPRESSION_MASK) >> FLAG_COMPRESSION_SHIFT) == 0
        return _compressed_bound(size or 0) if compressed else (size or 0)

    try:
        for raw, size, flags in cat.db.execute(
                "SELECT hash, size, flags FROM catalog WHERE hash IS NOT NULL AND length(hash) > 0"):
            if flags & FLAG_FILE_EXTERNAL:
                continue
            rel = obj.object_relpath(name(raw, flags), obj.SUFFIX_NONE)
            out[rel] = max(out.get(rel, 0), bound(size, flags))
        for raw, size, flags in cat.db.execute(
                "SELECT c.hash, c.size, f.flags FROM chunks c JOIN catalog f "
                "ON c.md5path_1 = f.md5path_1 AND c.md5path_2 = f.md5path_2"):
            if flags & FLAG_FILE_EXTERNAL:
                continue
            rel = obj.object_relpath(name(raw, flags), obj.SUFFIX_PARTIAL)
            out[rel] = max(out.get(rel, 0), bound(size, flags))
    except sqlite3.DatabaseError as exc:
        raise ReplicateError(f"{where}: unreadable catalog: {exc}") from None
    return out


def _run(http_: _Http, replica: _Replica, master_keys, allow_expired: bool, workers: int,
         now: int) -> ReplicateResult:
    root = replica.root
    txn = root / "data" / "txn"
    # 2. manifest, certificate, whitelist
    raw_manifest = http_.get(".cvmfspublished", MAX_MANIFEST)
    manifest, payload, digest, sig = Manifest.parse(raw_manifest, f".cvmfspublished of {http_.base}")
    if not manifest.certificate:
        raise ReplicateError(f".cvmfspublished of {http_.base} names no certificate (X)")
    cert_rel = obj.object_relpath(manifest.certificate, obj.SUFFIX_CERTIFICATE)
    cert_blob = None
    if (root / cert_rel).is_file():  # the replica has it: no transfer (re-hashed, it is small)
        cert_blob = (root / cert_rel).read_bytes()
        if not _hash_ok(cert_blob, manifest.certificate):
            cert_blob = None
    cert_fetched = cert_blob is None
    if cert_blob is None:
        cert_blob = http_.get(cert_rel, MAX_CERTIFICATE)
        _verify(cert_blob, manifest.certificate, cert_rel)
    cert = load_certificate(_inflate_bounded(cert_blob, MAX_CERTIFICATE, cert_rel), cert_rel)
    verify_manifest_signature(payload, digest, sig, cert, f".cvmfspublished of {http_.base}")
    raw_whitelist = http_.get(".cvmfswhitelist", MAX_WHITELIST)
    verify_whitelist(raw_whitelist, manifest.fqrn, cert, master_keys, now, allow_expired)

    previous = None
    try:
        previous = Manifest.parse((root / ".cvmfspublished").read_bytes(), f".cvmfspublished of {root}")[0]
    except FileNotFoundError:
        pass
    if previous is not None:
        if previous.fqrn != manifest.fqrn:
            raise ReplicateError(f"{root} replicates {previous.fqrn}, the source serves {manifest.fqrn}")
        if previous.revision > manifest.revision:
            raise ReplicateError(f"the source serves revision {manifest.revision} of {manifest.fqrn}, older than the "
                                 f"replica's {previous.revision}: refusing to roll back")
    res = ReplicateResult(manifest.fqrn, manifest.revision, manifest.root_catalog,
                          previous.revision if previous else None)

    marker = txn / DIRTY_MARKER
    if marker.exists():
        replica.dirty_since_ns = marker.stat().st_mtime_ns - 2_000_000_000  # file system timestamp slack
    else:
        marker.write_bytes(b"")
    replica.scan()

    if previous is not None and (root / ".cvmfspublished").read_bytes() == raw_manifest \
            and replica.dirty_since_ns is None:
        res.up_to_date = True  # the manifest is installed only when all it reaches is present
        atomic_write(root / ".cvmfswhitelist", raw_whitelist)
        marker.unlink()
        return res

    singles: list[tuple[str, bytes]] = [(cert_rel, cert_blob)] if cert_fetched else []  # stored after the catalogs

    def fetch_single(h: str | None, suffix: str, limit: int) -> bytes | None:
        if not h:
            return None
        rel = obj.object_relpath(h, suffix)
        if replica.has(rel) and not replica.dirty(rel):
            blob = (root / rel).read_bytes()  # small; read to parse (it was verified when stored)
            res.objects_present += 1
        else:
            blob = http_.get(rel, limit)
            _verify(blob, h, rel)
            singles.append((rel, blob))
        return blob

    # 3. history and meta-info; the roots to copy
    roots: dict[str, int] = {manifest.root_catalog: manifest.root_catalog_size or 0}
    hist_blob = fetch_single(manifest.history, obj.SUFFIX_HISTORY, MAX_HISTORY)
    fetch_single(manifest.metainfo, obj.SUFFIX_METAINFO, MAX_METAINFO)
    if hist_blob is not None:
        hpath = txn / f"history.{os.getpid()}.db"
        hpath.write_bytes(_inflate_bounded(hist_blob, MAX_HISTORY, "history"))
        try:
            _, tags = read_history(hpath, f"history {manifest.history}")
        finally:
            hpath.unlink()
        res.tags = len(tags)
        for t in tags:
            roots.setdefault(t.hash, t.size or 0)

    refs = rl.load_refs(root) or {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replicate")
    try:
        # 4. catalogs, level by level
        walked: list[tuple[str, bytes]] = []  # (rel, blob) in walk order: parents before children
        needed: dict[str, int] = {}
        seen: set[str] = set()
        level = list(roots.items())
        cat_lock = threading.Lock()

        def walk(h: str, size: int) -> list[tuple[str, int]]:
            rel = obj.object_relpath(h, obj.SUFFIX_CATALOG)
            limit = size if size else MAX_UNKNOWN_CATALOG
            blob = None
            if replica.has(rel):
                blob = (root / rel).read_bytes()
                if _hash_ok(blob, h):
                    with cat_lock:
                        res.objects_reverified += 1
                else:
                    blob = None
            if blob is None:
                blob = http_.get(rel, _compressed_bound(limit))
                _verify(blob, h, rel)
            data = _inflate_bounded(blob, limit, rel)
            if size and len(data) != size:
                raise ReplicateError(f"{rel}: inflates to {len(data)} bytes, its parent records {size}")
            path = txn / f"catalog.{h}.{threading.get_ident()}.db"
            path.write_bytes(data)
            try:
                cat = CatalogReader(path, rel)
                try:
                    objs = _catalog_objects(cat, rel)
                    nested = [(n.hash, n.size) for n in cat.nested()]
                finally:
                    cat.close()
            finally:
                path.unlink()
            with cat_lock:
                walked.append((rel, blob))
                for k, v in objs.items():
                    needed[k] = max(needed.get(k, 0), v)
            return nested

        while level:
            todo = []
            for h, size in level:
                if h in seen:
                    continue
                seen.add(h)
                rel = obj.object_relpath(h, obj.SUFFIX_CATALOG)
                if replica.has(rel) and not replica.dirty(rel):
                    res.objects_present += 1  # stored only after its subtree: complete
                    continue
                todo.append(pool.submit(walk, h, size))
            level = []
            for nested in _results(pool, todo):
                level.extend(nested)
        res.catalogs_walked = len(walked)

        # 5. file objects and chunks
        def fetch(rel: str, limit: int) -> None:
            h = rel[5:7] + rel[8:]
            if h[-1] in obj.KNOWN_SUFFIXES:
                h = h[:-1]
            if replica.has(rel):  # present but written since an interrupted run: re-hash it
                if _hash_ok((root / rel).read_bytes(), h):
                    with cat_lock:
                        res.objects_reverified += 1
                    return
            blob = http_.get(rel, limit)
            _verify(blob, h, rel)
            replica.store(rel, blob)
            with cat_lock:
                res.objects_fetched += 1

        jobs = []
        for rel, limit in sorted(needed.items()):
            if replica.has(rel) and not replica.dirty(rel):
                res.objects_present += 1
            else:
                jobs.append(pool.submit(fetch, rel, limit))
        _results(pool, jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    # 6. catalogs children first (a present catalog means a complete subtree), then X, H, M; sync
    for rel, blob in reversed(walked):
        if not replica.has(rel) or replica.dirty(rel):
            replica.store(rel, blob)
            res.objects_fetched += 1
    for rel, blob in singles:
        replica.store(rel, blob)
        res.objects_fetched += 1
    os.sync()

    # 7. reflog, whitelist, last-snapshot stamp, and the manifest last
    ts = manifest.timestamp
    for rel, _ in walked:
        rl.add(refs, Path(rel).parent.name + Path(rel).name[:-1], rl.TYPE_CATALOG, ts)
    for h in roots:
        rl.add(refs, h, rl.TYPE_CATALOG, ts)
    rl.add(refs, manifest.certificate, rl.TYPE_CERTIFICATE, ts)
    rl.add(refs, manifest.history, rl.TYPE_HISTORY, ts)
    rl.add(refs, manifest.metainfo, rl.TYPE_METAINFO, ts)
    rl.write_reflog(root / rl.REFLOG_FILE, manifest.fqrn, refs)
    atomic_write(root / ".cvmfswhitelist", raw_whitelist)
    stamp = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    atomic_write(root / LAST_SNAPSHOT, stamp + "\n")
    atomic_write(root / ".cvmfspublished", raw_manifest)
    marker.unlink()
    return res


def _results(pool: ThreadPoolExecutor, futures: list) -> list:
    """Results in order; on the first failure cancel what has not started and raise it."""
    if not futures:
        return []
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for f in futures:
        if f.done() and f.exception() is not None:
            for p in pending:
                p.cancel()
            raise f.exception()
    return [f.result() for f in futures]


def _hash_ok(blob: bytes, hexdigest: str) -> bool:
    return "-" not in hexdigest and hashlib.sha1(blob).hexdigest() == hexdigest


def _verify(blob: bytes, hexdigest: str, rel: str) -> None:
    if "-" in hexdigest:
        raise ReplicateError(f"{rel}: hash algorithm {hexdigest.split('-', 1)[1]} is not supported")
    actual = hashlib.sha1(blob).hexdigest()
    if actual != hexdigest:
        raise ReplicateError(f"{rel}: corrupted by the source (its SHA-1 is {actual})")
