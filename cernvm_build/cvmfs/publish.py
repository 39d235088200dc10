"""Create repositories and publish root trees into them as new, tagged, signed revisions.

Order of a publish (each step only adds immutable objects; the manifest rename at the end is the
single commit point, so a publisher killed anywhere leaves the previous revision intact):
lock -> load the previous revision (stat cache + catalog digests) -> scan the tree (sorted) -> store
file objects in a thread pool -> partition into catalogs -> write changed catalogs bottom-up ->
certificate, history -> (whitelist renewal) -> sync -> manifest rename.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import logging
import os
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cernvm_build.cvmfs import compression as comp
from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs import reflog as rl
from cernvm_build.cvmfs.catalog import (
    FLAG_COMPRESSION_SHIFT,
    FLAG_COMPRESSION_MASK,
    FLAG_DIR,
    FLAG_DIR_NESTED_MOUNTPOINT,
    FLAG_DIR_NESTED_ROOT,
    FLAG_FILE,
    FLAG_FILE_CHUNK,
    FLAG_FILE_SPECIAL,
    FLAG_LINK,
    SCHEMA,
    SCHEMA_REVISION,
    Counters,
    Entry,
    NestedRef,
    content_digest,
    md5_pair,
    serialize_xattrs,
    write_catalog,
)
from cernvm_build.cvmfs.history import TRUNK, TRUNK_PREVIOUS, Tag, advance, write_history
from cernvm_build.cvmfs.keys import RepoKeys, check_fqrn, check_outside, create_keys, load_keys
from cernvm_build.cvmfs.manifest import DEFAULT_TTL, Manifest, Whitelist, certificate_fingerprint
from cernvm_build.cvmfs.reader import LocalSource, Repository
from cernvm_build.errors import CvmfsBusyError, CvmfsError
from cernvm_build.util.files import atomic_dir, atomic_write, sha256_bytes, source_date_epoch

log = logging.getLogger(__name__)

LOCK_TREE_PATH = "/.cernvm/closure.lock.toml"
SIGNATURE_TREE_PATH = LOCK_TREE_PATH + ".sigstore.json"  # the lock's signature bundle, beside it
CATALOG_MARKER = ".cvmfscatalog"
FAULT_ENV = "CERNVM_BUILD_CVMFS_FAULT"  # test hook: SIGKILL ourselves at a named stage
DIGEST_PROPERTY = "cernvm_content_digest"  # nested catalogs: content_digest() of their rows, read back by load_state
DIR_SIZE = 4096  # directories' st_size depends on the file system's history; store the usual constant


@dataclass
class PublishOptions:
    tag: str | None = None  # None: generic-<UTC time>
    description: str = ""
    lock_file: Path | None = None
    signature: Path | None = None  # the lock's Sigstore bundle (`sign`), stored beside the lock
    max_catalog_entries: int = 100_000  # auto-split a catalog above this many entries ...
    min_catalog_entries: int = 1_000  # ... by moving subtrees at least this big into nested catalogs
    chunk_size: int = obj.DEFAULT_CHUNK_SIZE
    # NAME[:LEVEL] (compression.py); None: the repository's pinned one. Another than the pin needs repin_compression,
    # which then re-compresses every file (as into a fresh repository) and pins the new one.
    compressor: str | None = None
    repin_compression: bool = False
    # compressing threads; 0: two per core (reads of a cold tree block, and on a shared machine the scheduler
    # shares the cores per runnable thread: measured 1.2x faster than one per core, same CPU seconds)
    workers: int = 0
    wait: float = 0.0  # seconds to wait for a concurrent publisher
    xattrs: bool = True
    ttl: int = DEFAULT_TTL
    whitelist_days: int = 30
    renew_whitelist_days: int = 7  # re-sign when fewer days are left (needs the master key)
    durable: bool = True  # sync objects to disk before the manifest becomes visible


@dataclass
class PublishResult:
    fqrn: str
    revision: int
    root_hash: str
    root_size: int
    tag: str
    files: int = 0
    files_read: int = 0  # regular files whose bytes were read (not taken from the previous revision)
    bytes_read: int = 0
    objects_written: int = 0  # all new objects, catalogs and history included
    data_objects_written: int = 0  # new file content objects (whole files and chunks)
    bytes_written: int = 0
    catalogs: int = 0
    catalogs_written: int = 0
    entries: int = 0
    seconds: float = 0.0
    whitelist_renewed: bool = False
    compressor: str = ""  # the pinned compressor the revision was written with
    phases: dict[str, float] = field(default_factory=dict)  # seconds per stage, for benchmarks and -v


def revision_time(lock_data: bytes | None = None) -> int:
    """SOURCE_DATE_EPOCH when set; else, for a snapshot of a lock, the lock's newest metadata date
    (as the root tree's mtimes); only a tree published without a lock gets the wall clock."""
    if lock_data is not None:
        from cernvm_build.errors import LockError
        from cernvm_build.lock.lockfile import loads, lock_epoch

        try:
            return source_date_epoch(default=lock_epoch(loads(lock_data.decode("utf-8"))) or int(time.time()))
        except (LockError, UnicodeDecodeError):
            pass
    return source_date_epoch(default=int(time.time()))


def _fault(stage: str) -> None:
    if os.environ.get(FAULT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------- locking
@contextlib.contextmanager
def repository_lock(repo: Path, wait: float = 0.0) -> Iterator[None]:
    """Serialize writers (publish, gc, resign) with an flock on data/txn/publish.lock.

    The kernel drops the lock when its holder dies, so a killed publisher never blocks the next one.
    """
    txn = Path(repo) / "data" / "txn"
    if not txn.is_dir():
        raise CvmfsError(f"{repo} is not a repository created by 'cvmfs init' (no data/txn)")
    fd = os.open(txn / "publish.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise CvmfsBusyError(f"repository {repo} is busy: being written by another process (pid {holder});"
                                         " try again later or pass --wait SECONDS") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for stale in txn.iterdir():  # scratch files of a publisher that died
            if stale.name != "publish.lock":
                with contextlib.suppress(OSError):
                    stale.unlink()
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------- tree scan
@dataclass(eq=False, slots=True)
class Node:
    path: str  # absolute in the repository, "" for the root
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    mtimens: int | None = None
    rdev: int = 0
    inode: tuple[int, int] = (0, 0)
    nlink: int = 1
    xattr: bytes | None = None
    symlink: str = ""
    source: str | None = None  # on-disk path
    data: bytes | None = None  # content of a virtual file
    children: list["Node"] | None = None
    content: obj.FileContent | None = None
    weight: int = 1
    nested: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1] if self.path else ""

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def is_regular(self) -> bool:
        return stat.S_ISREG(self.mode)


def _read_xattrs(src: str) -> bytes | None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return None
    if not names:
        return None  # what serialize_xattrs({}) gives
    attrs = {}
    for name in sorted(names):
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
        except OSError:
            continue
        if len(name.encode()) > 255 or len(value) > 255:
            log.warning("%s: extended attribute %s is longer than CernVM-FS allows (255 bytes); skipped", src, name)
            continue
        attrs[name] = value
    return serialize_xattrs(attrs)


def _node(path: str, st: os.stat_result, src: str, xattrs: bool) -> Node:
    mode = st.st_mode
    n = Node(path=path, mode=mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size,
             mtime=st.st_mtime_ns // 1_000_000_000, mtimens=(st.st_mtime_ns % 1_000_000_000) or None,
             rdev=st.st_rdev, inode=(st.st_dev, st.st_ino), nlink=st.st_nlink, source=src)
    if stat.S_ISDIR(mode):
        n.children = []
        n.size = DIR_SIZE
    elif stat.S_ISLNK(mode):
        n.symlink = os.readlink(src)
        n.size = len(n.symlink.encode("utf-8", "surrogateescape"))
        return n
    elif not stat.S_ISREG(mode):
        n.size = st.st_rdev if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
    if xattrs:
        n.xattr = _read_xattrs(src)
    return n


def _check_name(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise CvmfsError(f"{path!r}: file name is not valid UTF-8; CernVM-FS catalogs store names as text") from None


def scan_tree(tree: Path, xattrs: bool = True) -> Node:
    """The whole tree as Nodes, children sorted by name (UTF-8 byte order = code point order)."""
    try:
        st = os.lstat(tree)
    except OSError as exc:
        raise CvmfsError(f"cannot read tree {tree}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise CvmfsError(f"{tree} is not a directory")
    root = _node("", st, str(tree), xattrs)
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d.source) as it:
                ents = sorted(it, key=lambda e: e.name)
            for de in ents:
                path = f"{d.path}/{de.name}"
                _check_name(path)
                n = _node(path, de.stat(follow_symlinks=False), de.path, xattrs)
                d.children.append(n)
                if n.is_dir:
                    stack.append(n)
        except OSError as exc:
            raise CvmfsError(f"cannot read {exc.filename or d.source}: {exc.strerror}") from exc
    return root


def _virtual_file(path: str, data: bytes, mtime: int) -> Node:
    return Node(path=path, mode=stat.S_IFREG | 0o644, size=len(data), mtime=mtime, data=data)


def _insert(parent: Node, child: Node) -> None:
    parent.children = [c for c in parent.children if c.name != child.name] + [child]
    parent.children.sort(key=lambda c: c.name)


def add_lock_file(root: Node, lock_data: bytes, mtime: int, signature: bytes | None = None) -> None:
    """Place the closure lock at /.cernvm/closure.lock.toml, and its signature bundle (if any) beside it at
    /.cernvm/closure.lock.toml.sigstore.json (the tree on disk is not modified)."""
    parent = next((c for c in root.children if c.name == ".cernvm"), None)
    if parent is None or not parent.is_dir:
        parent = Node(path="/.cernvm", mode=stat.S_IFDIR | 0o755, size=DIR_SIZE, mtime=mtime, children=[])
        _insert(root, parent)
    _insert(parent, _virtual_file(LOCK_TREE_PATH, lock_data, mtime))
    if signature is not None:
        _insert(parent, _virtual_file(SIGNATURE_TREE_PATH, signature, mtime))


def read_signature(path: Path, lock_data: bytes) -> bytes:
    """The signature bundle at PATH, refused unless it is a Sigstore bundle whose signed subject is the lock
    being published (its signature itself is checked by whoever holds the key: `verify`, `report --key`)."""
    from cernvm_build.errors import LockSignatureError
    from cernvm_build.trust.signing import describe_bundle

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CvmfsError(f"cannot read signature {path}: {exc.strerror}") from exc
    try:
        info = describe_bundle(data, lock_data, str(path))
    except LockSignatureError as exc:
        raise CvmfsError(str(exc)) from exc
    if not info.matches_lock:
        raise CvmfsError(f"signature {path} signs sha256 {info.subject_sha256}, not the lock being published "
                         f"(sha256 {sha256_bytes(lock_data)})")
    return data


def _dirs_postorder(root: Node) -> list[Node]:
    out, stack = [], [root]
    while stack:
        d = stack.pop()
        out.append(d)
        stack.extend(c for c in d.children if c.is_dir)
    return out[::-1]


def partition(root: Node, max_entries: int, min_entries: int) -> None:
    """Choose nested catalog roots: directories holding a `.cvmfscatalog` file, plus automatic splits.

    Bottom-up, each directory's weight is the number of entries its catalog would hold; when it
    exceeds max_entries the heaviest subdirectories (≥ min_entries) become nested catalogs until it
    fits. Deterministic: it depends only on the tree's shape.
    """
    for d in _dirs_postorder(root):
        w = 1
        subdirs = []
        for c in d.children:
            if c.is_dir and not c.nested:
                w += c.weight
                subdirs.append(c)
            else:
                w += 1
        if w > max_entries:
            for c in sorted(subdirs, key=lambda c: (-c.weight, c.path)):
                if w <= max_entries or c.weight < min_entries:
                    break
                c.nested = True
                w -= c.weight - 1
        if d.path and any(c.name == CATALOG_MARKER and c.is_regular for c in d.children):
            d.nested = True
        d.weight = w
    for d in _dirs_postorder(root):
        if d.nested and not any(c.name == CATALOG_MARKER for c in d.children):
            # cvmfs_server check wants the marker in every nested root ("nested catalog without marker")
            marker = _virtual_file(f"{d.path}/{CATALOG_MARKER}", b"", d.mtime)
            marker.uid, marker.gid = d.uid, d.gid
            _insert(d, marker)


# --------------------------------------------------------------------------------------------- previous state
@dataclass
class PrevCatalog:
    hash: str
    size: int
    revision: int
    digest: str
    counters: Counters


@dataclass
class PrevState:
    manifest: Manifest
    tags: list[Tag]
    catalogs: dict[str, PrevCatalog] = field(default_factory=dict)
    # stat cache: md5 path pair -> (size, mtime, mtimens, mode, flags, hash, chunks) of every regular file
    files: dict[tuple[int, int], tuple] = field(default_factory=dict)
    certificate_pem: bytes = b""
    pin: tuple[str, str] | None = None  # (compressor spec, probe) from the root catalog; None before pins


def load_state(repo: Path) -> PrevState:
    """What the current revision contains: per-path file entries (stat cache) and catalog digests."""
    with Repository(LocalSource(repo), check_whitelist=False) as r:
        state = PrevState(manifest=r.manifest, tags=r.tags())
        for info in r.catalogs():
            # the root catalog is rewritten on every publish: only nested ones need a content digest, which
            # the publisher records in their properties (computed here for catalogs from before it did)
            digest = ""
            if info.path:
                digest = info.reader.properties.get(DIGEST_PROPERTY) or content_digest(
                    info.reader.all_entries(ordered=False), info.reader.nested())
            else:
                state.pin = comp.pinned(info.reader.properties)
            state.catalogs[info.path] = PrevCatalog(
                info.hash, info.reader.file_size, info.reader.revision, digest,
                Counters.from_rows(info.reader.statistics()))
            state.files.update(info.reader.file_stats())
        from cryptography.hazmat.primitives import serialization
        state.certificate_pem = r.certificate.public_bytes(serialization.Encoding.PEM)
    return state


# --------------------------------------------------------------------------------------------------- writing
class _CatalogBuilder:
    """Turns the partitioned tree into catalogs, children first, reusing unchanged ones."""

    def __init__(self, store: obj.ObjectStore, prev: dict[str, PrevCatalog], now: int, root_revision: int,
                 ttl: int, result: PublishResult, root_properties: dict[str, str] | None = None):
        self.store, self.prev, self.now, self.root_revision = store, prev, now, root_revision
        self.ttl, self.result = ttl, result
        self.root_properties = root_properties or {}  # the compressor pin
        self.catalog_hashes: list[str] = []  # every catalog of the new revision (reflog), written or reused

    @staticmethod
    def _dir_entry(d: Node, flags: int) -> Entry:
        subdirs = sum(1 for c in d.children if c.is_dir)
        return Entry(path=d.path, mode=d.mode, size=d.size, mtime=d.mtime, mtimens=d.mtimens, flags=flags,
                     uid=d.uid, gid=d.gid, linkcount=2 + subdirs, xattr=d.xattr)

    @staticmethod
    def _file_entry(n: Node, group: tuple[int, int] | None) -> Entry:
        e = Entry(path=n.path, mode=n.mode, size=n.size, mtime=n.mtime, mtimens=n.mtimens, flags=FLAG_FILE,
                  uid=n.uid, gid=n.gid, xattr=n.xattr)
        if n.is_regular:
            c = n.content
            e.size = c.size
            if c.chunked:
                e.flags |= FLAG_FILE_CHUNK
                e.chunks = c.chunks
            if not c.compressed:
                e.flags |= 1 << FLAG_COMPRESSION_SHIFT  # compression "none": the object is the file's bytes
            e.hash = c.hash
        elif stat.S_ISLNK(n.mode):
            e.flags |= FLAG_LINK
            e.symlink = n.symlink
        else:
            e.flags |= FLAG_FILE_SPECIAL
        if group:
            e.hardlink_group, e.linkcount = group
        return e

    def build(self, top: Node) -> tuple[str, int, Counters]:
        entries = [self._dir_entry(top, FLAG_DIR | (FLAG_DIR_NESTED_ROOT if top.path else 0))]
        nested: list[NestedRef] = []
        counters = Counters()
        next_group = 0
        stack = [top]
        while stack:
            d = stack.pop()
            by_inode: dict[tuple[int, int], list[Node]] = {}
            for c in d.children:
                if c.is_regular and c.nlink > 1 and c.source is not None:
                    by_inode.setdefault(c.inode, []).append(c)
            groups: dict[Node, tuple[int, int]] = {}
            for members in by_inode.values():  # hard links are emulated within one directory only
                if len(members) > 1:
                    next_group += 1
                    for m in members:
                        groups[m] = (next_group, len(members))
            for c in d.children:
                if c.is_dir and c.nested:
                    h, size, child_counters = self.build(c)
                    nested.append(NestedRef(c.path, h, size))
                    counters.add_child(child_counters)
                    entries.append(self._dir_entry(c, FLAG_DIR | FLAG_DIR_NESTED_MOUNTPOINT))
                elif c.is_dir:
                    entries.append(self._dir_entry(c, FLAG_DIR))
                    stack.append(c)
                else:
                    entries.append(self._file_entry(c, groups.get(c)))
        for e in entries:
            counters.add_entry(e)
        counters.self_["nested"] = len(nested)
        self.result.catalogs += 1
        self.result.entries += len(entries)
        prev = self.prev.get(top.path)
        digest = content_digest(entries, nested) if top.path else ""
        if top.path and prev is not None and prev.digest == digest:
            self.catalog_hashes.append(prev.hash)
            return prev.hash, prev.size, prev.counters
        props = {"schema": SCHEMA, "schema_revision": str(SCHEMA_REVISION), "last_modified": str(self.now)}
        if top.path:
            props["root_prefix"] = top.path
            props[DIGEST_PROPERTY] = digest
            props["revision"] = str(prev.revision + 1 if prev else 1)
        else:
            props["revision"] = str(self.root_revision)
            props["TTL"] = str(self.ttl)
            props.update(self.root_properties)
        if prev is not None:
            props["previous_revision"] = prev.hash
        tmp = self.store.txn / f"catalog.{os.getpid()}.db"
        write_catalog(tmp, entries, nested, props, counters)
        data = tmp.read_bytes()
        tmp.unlink()
        h = self.store.put(data, obj.SUFFIX_CATALOG)
        self.catalog_hashes.append(h)
        self.result.catalogs_written += 1
        return h, len(data), counters


def _store_contents(root: Node, store: obj.ObjectStore, prev_files: dict[tuple[int, int], tuple], workers: int,
                    result: PublishResult) -> None:
    """Give every regular file its FileContent: from the previous revision when size, mtime and mode are
    unchanged (no read), else by compressing and hashing it in a thread pool (zlib/hashlib drop the GIL)."""
    todo: dict[tuple[int, int] | int, list[Node]] = {}
    stack = [root]
    while stack:
        d = stack.pop()
        for c in d.children:
            if c.is_dir:
                stack.append(c)
                continue
            if not c.is_regular:
                continue
            result.files += 1
            p = prev_files.get(md5_pair(c.path)) if c.data is None else None
            if p is not None:
                size, mtime, mtimens, mode, flags, h, chunks = p
                algo = (flags & FLAG_COMPRESSION_MASK) >> FLAG_COMPRESSION_SHIFT
                if (size == c.size and mtime == c.mtime and mtimens == c.mtimens and mode == c.mode
                        and algo in (0, 1) and (h is not None or chunks)):
                    chunked = bool(flags & FLAG_FILE_CHUNK)
                    c.content = obj.FileContent(size, None if chunked else h, chunks if chunked else (), algo == 0)
                    continue
            key = c.inode if (c.nlink > 1 and c.data is None) else id(c)
            todo.setdefault(key, []).append(c)

    def work(nodes: list[Node]) -> None:
        n = nodes[0]
        content = store.ingest_bytes(n.data) if n.data is not None else store.ingest_file(n.source)
        for m in nodes:
            m.content = content

    jobs = sorted(todo.values(), key=lambda ns: -ns[0].size)  # big files first: better load balance
    result.files_read = sum(len(ns) for ns in jobs if ns[0].data is None)  # virtual files are not reads
    if workers <= 1:
        for ns in jobs:
            work(ns)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(work, ns) for ns in jobs]:
            fut.result()


def _tag_name(opts: PublishOptions, now: int) -> str:
    if opts.tag:
        return opts.tag
    return "generic-" + _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_tag(name: str, tags: list[Tag]) -> None:
    if not name or any(ch.isspace() for ch in name) or name in (TRUNK, TRUNK_PREVIOUS):
        raise CvmfsError(f"invalid tag name {name!r} (non-empty, no spaces, not trunk/trunk-previous)")
    if any(t.name == name for t in tags):
        raise CvmfsError(f"tag {name!r} already exists in this repository; choose another --tag")


def lock_description(description: str, lock_data: bytes) -> str:
    """Tag description carrying the closure lock digest (the snapshot's contract with its lock)."""
    marker = f"closure-lock sha256:{sha256_bytes(lock_data)}"
    return f"{description} [{marker}]" if description else marker


def _write_whitelist(repo: Path, keys: RepoKeys, days: int) -> Whitelist:
    """Whitelists use the wall clock even under SOURCE_DATE_EPOCH: they state freshness, not content."""
    if keys.master_key is None:
        raise CvmfsError(f"master key {keys.fqrn}.masterkey is missing: cannot sign the whitelist")
    now = int(time.time())
    wl = Whitelist(created=now, expires=now + days * 86400, fqrn=keys.fqrn,
                   fingerprints=[certificate_fingerprint(keys.certificate)])
    atomic_write(repo / ".cvmfswhitelist", wl.sign(keys.master_key))
    return wl


def sign_and_install(repo: Path, keys: RepoKeys, manifest: Manifest, refs: rl.Refs) -> Manifest:
    """Write the reflog (atomically) and name it in the manifest's Y, then sign and install the manifest."""
    manifest.reflog = rl.write_reflog(repo / rl.REFLOG_FILE, keys.fqrn, refs)
    data = manifest.sign(keys.repo_key)
    _fault("manifest")
    atomic_write(repo / ".cvmfspublished", data)
    return manifest


def commit_revision(repo: Path, store: obj.ObjectStore, keys: RepoKeys, root_hash: str, root_size: int,
                    revision: int, tags: list[Tag], prev_history: str | None, now: int, ttl: int,
                    durable: bool, catalogs: list[str] = (), keep_ref=None) -> Manifest:
    """Make a revision current: certificate and history objects, reflog, then the signed manifest, last.

    Shared by publish, init and gc (which re-commits the same root with fewer tags). CATALOGS: every
    catalog of the revision, recorded in the reflog with the revision time NOW (references already there
    keep theirs); KEEP_REF(hash, type), when given, drops the references it refuses (gc)."""
    cert_hash = store.put(keys.certificate_pem, obj.SUFFIX_CERTIFICATE)
    tmp = store.txn / f"history.{os.getpid()}.db"
    write_history(tmp, keys.fqrn, tags, prev_history)
    history_hash = store.put(tmp.read_bytes(), obj.SUFFIX_HISTORY)
    tmp.unlink()
    manifest = Manifest(root_catalog=root_hash, root_catalog_size=root_size, revision=revision, fqrn=keys.fqrn,
                        ttl=ttl, certificate=cert_hash, history=history_hash, timestamp=now)
    refs = rl.load_refs(repo)
    if refs is None:  # a repository from before the reflog: start it with what its tags name
        refs = {}
        for t in tags:
            rl.add(refs, t.hash, rl.TYPE_CATALOG, now)
    if keep_ref is not None:
        refs = {h: v for h, v in refs.items() if keep_ref(h, v[0])}
    for h in [*catalogs, root_hash]:
        rl.add(refs, h, rl.TYPE_CATALOG, now)
    rl.add(refs, cert_hash, rl.TYPE_CERTIFICATE, now)
    rl.add(refs, history_hash, rl.TYPE_HISTORY, now)
    _fault("catalogs")
    store.wait()  # every object is in place (written by the store's threads) before the manifest names it
    if durable:
        store.flush()  # every object reachable from the new manifest is on disk before the manifest is
    return sign_and_install(repo, keys, manifest, refs)


def init_repository(repo: str | os.PathLike, fqrn: str, keydir: str | os.PathLike, *,
                    whitelist_days: int = 30, ttl: int = DEFAULT_TTL, compressor: str | None = None) -> Manifest:
    """A new stratum-0 directory with keys, whitelist and an empty revision 1 (tag trunk), pinned to
    COMPRESSOR (NAME[:LEVEL], default compression.DEFAULT) for every later publish."""
    repo, keydir = Path(repo), Path(keydir)
    check_fqrn(fqrn)
    compressor_ = comp.load(compressor or comp.DEFAULT)
    check_outside(keydir, repo)
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise CvmfsError(f"{repo} already exists and is not an empty directory")
    now = revision_time()
    keys = create_keys(keydir, fqrn, now)
    if repo.exists():
        repo.rmdir()  # empty: replaced atomically below
    with atomic_dir(repo) as tmp:  # a failed init leaves nothing behind under DIR
        store = obj.ObjectStore(tmp, compressor_)
        store.create_layout()
        (tmp / ".cvmfs_master_replica").touch()
        store.put_blob(obj.EMPTY_OBJECT)  # the empty object: every empty file and .cvmfscatalog marker points at it
        # The empty revision 1 is dated SOURCE_DATE_EPOCH or else 0, not the clock: the first snapshot's
        # root catalog names it as previous_revision, so a clock here would make that snapshot's root
        # hash depend on when the repository was created rather than only on its content and date.
        empty_date = source_date_epoch(default=0)
        root = Node(path="", mode=stat.S_IFDIR | 0o755, size=DIR_SIZE, mtime=empty_date, children=[])
        result = PublishResult(fqrn, 1, "", 0, TRUNK)
        h, size, _ = _CatalogBuilder(store, {}, empty_date, 1, ttl, result, compressor_.pin()).build(root)
        _write_whitelist(tmp, keys, whitelist_days)
        tags = advance([], Tag(TRUNK, h, 1, now, "", size))
        manifest = commit_revision(tmp, store, keys, h, size, 1, tags, None, now, ttl, durable=True, catalogs=[h])
        os.chmod(tmp, 0o755)
    return manifest


def resign_whitelist(repo: str | os.PathLike, keydir: str | os.PathLike, days: int = 30,
                     wait: float = 0.0) -> Whitelist:
    """Renew .cvmfswhitelist (new expiry) with the master key; the manifest is untouched."""
    repo = Path(repo)
    check_outside(Path(keydir), repo)
    manifest, _, _, _ = Manifest.parse(LocalSource(repo).get(".cvmfspublished"))
    keys = load_keys(Path(keydir), manifest.fqrn, need_master=True)
    with repository_lock(repo, wait):
        return _write_whitelist(repo, keys, days)


def publish(tree: str | os.PathLike, repo: str | os.PathLike, keydir: str | os.PathLike,
            options: PublishOptions | None = None) -> PublishResult:
    """Publish TREE as the next revision of the repository at REPO, tagged options.tag."""
    opts = options or PublishOptions()
    tree, repo, keydir = Path(tree), Path(repo), Path(keydir)
    started = time.monotonic()
    check_outside(keydir, repo)
    lock_data = None
    if opts.lock_file is not None:
        try:
            lock_data = Path(opts.lock_file).read_bytes()
        except OSError as exc:
            raise CvmfsError(f"cannot read lock file {opts.lock_file}: {exc.strerror}") from exc
    signature = None
    if opts.signature is not None:
        if lock_data is None:
            raise CvmfsError(f"signature {opts.signature} given without the lock it signs (--lock)")
        signature = read_signature(opts.signature, lock_data)
    with repository_lock(repo, opts.wait), contextlib.ExitStack() as stack:
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now_m = time.monotonic()
            result.phases[name] = now_m - mark
            mark = now_m

        prev = load_state(repo)
        compressor, reuse = comp.resolve(prev.pin, opts.compressor, opts.repin_compression, str(repo))
        if not reuse:
            log.info("%s: every file is compressed anew with %s (%s)", repo, compressor.spec,
                     "re-pinned" if prev.pin else "first publish with a pinned compressor")
        fqrn = prev.manifest.fqrn
        keys = load_keys(keydir, fqrn)
        now = revision_time(lock_data)
        tag = _tag_name(opts, now)
        _check_tag(tag, prev.tags)
        description = lock_description(opts.description, lock_data) if lock_data is not None else opts.description
        revision = prev.manifest.revision + 1
        result = PublishResult(fqrn, revision, "", 0, tag)
        phase("load previous revision")

        wl_raw = None
        with contextlib.suppress(CvmfsError):
            wl_raw = LocalSource(repo).get(".cvmfswhitelist")
        whitelist = Whitelist.parse(wl_raw)[0] if wl_raw else None
        fp = certificate_fingerprint(keys.certificate)
        renew = (whitelist is None or fp not in whitelist.fingerprints
                 or whitelist.expires - time.time() < opts.renew_whitelist_days * 86400)
        if renew and not keys.has_master_key and (whitelist is None or fp not in whitelist.fingerprints):
            raise CvmfsError(f"the certificate in {keydir} is not on the repository whitelist and the master key "
                             "is absent; re-sign with 'cvmfs resign'")

        root = scan_tree(tree, opts.xattrs)
        if lock_data is not None:
            add_lock_file(root, lock_data, now, signature)
        partition(root, opts.max_catalog_entries, opts.min_catalog_entries)
        phase("scan tree")
        result.compressor = compressor.spec
        workers = opts.workers or 2 * (os.cpu_count() or 1)
        store = obj.ObjectStore(repo, compressor, chunk_size=opts.chunk_size, writers=2 if workers > 1 else 0)
        stack.callback(store.close)
        store.put_blob(obj.EMPTY_OBJECT)
        _store_contents(root, store, prev.files if reuse else {}, workers, result)
        phase("store file objects")
        _fault("objects")
        builder = _CatalogBuilder(store, prev.catalogs, now, revision, opts.ttl, result, compressor.pin())
        root_hash, root_size, _ = builder.build(root)
        phase("write catalogs")
        tags = advance(prev.tags, Tag(tag, root_hash, revision, now, description, root_size))
        if renew and keys.has_master_key:
            _write_whitelist(repo, keys, opts.whitelist_days)
            result.whitelist_renewed = True
        elif renew:
            log.warning("whitelist of %s expires %s and the master key is not in %s: run 'cvmfs resign'",
                        fqrn, whitelist.expires_text if whitelist else "?", keydir)
        commit_revision(repo, store, keys, root_hash, root_size, revision, tags, prev.manifest.history, now, opts.ttl,
                        opts.durable, catalogs=builder.catalog_hashes)
        phase("commit (history, sync, manifest)")
        log.info("publish phases: %s", ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items()))
        result.root_hash, result.root_size = root_hash, root_size
        result.objects_written = store.stats.objects_written
        result.data_objects_written = sum(store.stats.written_by_suffix.get(s, 0)
                                          for s in (obj.SUFFIX_NONE, obj.SUFFIX_PARTIAL))
        result.bytes_written = store.stats.bytes_written
        result.bytes_read = store.stats.bytes_read
        result.seconds = time.monotonic() - started
        return result
