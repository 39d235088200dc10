"""Content-addressed object store (`data/XX/...`): deflate, SHA-1 over the stored bytes, chunks.

CernVM-FS names an object by the hash of its *compressed* bytes (the client hashes what it downloads),
so compression and hashing happen together here. Objects are immutable: they are written once to a
scratch file in `data/txn/` and renamed into place, so a reader (or a killed publisher) never sees a
half-written object under its final name.

Data objects are deflated by the repository's pinned compressor (compression.py), except files that deflate
does not shrink by RAW_SAVING (already-compressed files): those are stored as they are and their catalog
entry says so (compression field = 1, "none"), which every CernVM-FS client honours.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.cvmfs.compression import Compressor
from cernvm_build.errors import CvmfsError, CvmfsIntegrityError

# Object suffixes (type hints appended to the object's file name).
SUFFIX_NONE = ""
SUFFIX_CATALOG = "C"
SUFFIX_HISTORY = "H"
SUFFIX_CERTIFICATE = "X"
SUFFIX_METAINFO = "M"
SUFFIX_PARTIAL = "P"
KNOWN_SUFFIXES = frozenset("CHXMPL")

DIGEST_SIZE = 20  # SHA-1, the only content hash this writer produces
DEFAULT_CHUNK_SIZE = 8 << 20  # files larger than this are cut into fixed pieces of this size
# zlib's Z_DEFAULT_COMPRESSION (= 6): the reference stratum-1 replication (cvmfs_swissknife pull) inflates the
# certificate and meta-info objects and deflates them again at this level, storing the result under the
# manifest's hash. Written at any other level, a replica's copy would no longer match X (or M).
REFERENCE_LEVEL = 6
RECOMPRESSED_SUFFIXES = frozenset("XM")  # objects the reference replication re-compresses
READ_BLOCK = 1 << 20
# A file is stored uncompressed when deflate saves less than this fraction of its bytes: judged on the whole
# file up to SAMPLE_WHOLE bytes, else on three SAMPLE_WINDOW windows (start, middle, end) compressed alone.
# A function of the content and the pinned compressor only, so the same tree still gives the same objects.
RAW_SAVING = 0.03
SAMPLE_WHOLE = 256 << 10
SAMPLE_WINDOW = 32 << 10

EMPTY_OBJECT = zlib.compress(b"")
EMPTY_HASH = hashlib.sha1(EMPTY_OBJECT).hexdigest()


def object_relpath(hexdigest: str, suffix: str = "") -> str:
    """Repository-relative path of an object: data/ + 2 hex + rest + suffix."""
    return f"data/{hexdigest[:2]}/{hexdigest[2:]}{suffix}"


def parse_object_name(subdir: str, filename: str) -> tuple[str, str] | None:
    """Inverse of object_relpath for a file found under data/XX/: (hex, suffix), or None if foreign."""
    if len(subdir) != 2:
        return None
    name = subdir + filename
    suffix = ""
    if name and name[-1] in KNOWN_SUFFIXES:
        suffix, name = name[-1], name[:-1]
    hexpart = name.split("-", 1)[0]
    if len(hexpart) != 2 * DIGEST_SIZE or any(c not in "0123456789abcdef" for c in hexpart):
        return None
    return name, suffix


def verify_blob(blob: bytes, hexdigest: str, what: str) -> None:
    """Refuse bytes whose SHA-1 differs from the name they were fetched under."""
    if "-" in hexdigest:
        raise CvmfsIntegrityError(f"{what}: hash algorithm {hexdigest.split('-', 1)[1]} is not supported")
    actual = hashlib.sha1(blob).hexdigest()
    if actual != hexdigest:
        raise CvmfsIntegrityError(f"{what} is corrupted: its SHA-1 is {actual}, expected {hexdigest}")


def _read_upto(fd: int, n: int) -> bytes:
    """Up to N bytes from FD, fewer only at end of file (one read, plus one that finds the end)."""
    first = os.read(fd, n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        more = os.read(fd, n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return first if len(parts) == 1 else b"".join(parts)


def inflate(blob: bytes, what: str) -> bytes:
    try:
        return zlib.decompress(blob)
    except zlib.error as exc:
        raise CvmfsIntegrityError(f"{what} is not a valid zlib stream: {exc}") from exc


@dataclass(frozen=True)
class Chunk:
    """One piece of a chunked file: uncompressed offset and size, hex hash of its `P` object."""

    offset: int
    size: int
    hash: str


@dataclass(frozen=True)
class FileContent:
    """Where a regular file's bytes live: one whole-file object, or a list of chunks (hash None)."""

    size: int
    hash: str | None
    chunks: tuple[Chunk, ...] = ()
    compressed: bool = True  # False: the object(s) hold the file's bytes as they are

    @property
    def chunked(self) -> bool:
        return bool(self.chunks)


@dataclass
class StoreStats:
    objects_written: int = 0
    bytes_written: int = 0
    objects_existing: int = 0
    bytes_read: int = 0
    written_by_suffix: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, written: bool, nbytes: int, suffix: str = "") -> None:
        with self._lock:
            if written:
                self.written_by_suffix[suffix] = self.written_by_suffix.get(suffix, 0) + 1
                self.objects_written += 1
                self.bytes_written += nbytes
            else:
                self.objects_existing += 1

    def count_read(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_read += nbytes


class ObjectStore:
    """The `data/` directory of a stratum-0 repository on the local file system (writer side)."""

    WRITE_BUDGET = 64 << 20  # bytes handed to the writer threads and not yet on disk

    def __init__(self, repo: str | os.PathLike, compressor: Compressor | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, writers: int = 0):
        self.root = Path(repo)
        self.data = self.root / "data"
        self.txn = self.data / "txn"
        self._data_s = os.fspath(self.data)
        self.compressor = compressor or Compressor("zlib", REFERENCE_LEVEL)
        self.chunk_size = chunk_size
        self.stats = StoreStats()
        self.new_paths: list[str] = []  # objects written by this store, for flush()
        self._claimed: set[str] = set()  # names being or already written by this store's threads
        self._claim_lock = threading.Lock()
        # WRITERS > 0: objects are written by that many threads of their own, so the compressing threads
        # never wait for the file system (creating a file waits for the journal, which can take
        # milliseconds while the disk writes back); wait() (and flush()) joins them
        self._writers = writers
        self._pool = None
        self._pending: list = []
        self._inflight = 0
        self._budget = threading.Condition()
        self._write_error: BaseException | None = None

    def create_layout(self) -> None:
        """All 256 fan-out directories plus the scratch directory, as the reference server does."""
        for i in range(256):
            (self.data / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        self.txn.mkdir(parents=True, exist_ok=True)

    def path(self, hexdigest: str, suffix: str = "") -> Path:
        return self.root / object_relpath(hexdigest, suffix)

    def has(self, hexdigest: str, suffix: str = "") -> bool:
        return os.path.exists(self.path(hexdigest, suffix))

    def put_blob(self, blob: bytes, suffix: str = "") -> str:
        """Store already-compressed bytes under their SHA-1; return the hex digest."""
        hexdigest = hashlib.sha1(blob).hexdigest()
        # plain strings and os calls, not pathlib: this runs once per object, thousands of times a publish
        dest = f"{self._data_s}/{hexdigest[:2]}/{hexdigest[2:]}{suffix}"
        with self._claim_lock:       # two threads with the same content: one writes, the other counts it as present
            claimed = hexdigest + suffix in self._claimed
            self._claimed.add(hexdigest + suffix)
        if claimed or os.path.exists(dest):
            self.stats.add(False, 0)
            return hexdigest
        self.stats.add(True, len(blob), suffix)
        if self._writers:
            self._write_later(blob, dest, hexdigest + suffix)
        else:
            self._write(blob, dest, hexdigest + suffix)
        return hexdigest

    def _write_later(self, blob: bytes, dest: str, name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with self._budget:
            while self._inflight and self._inflight + len(blob) > self.WRITE_BUDGET:
                self._budget.wait()
            self._inflight += len(blob)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._writers, thread_name_prefix="cvmfs-write")

        def job() -> None:
            try:
                self._write(blob, dest, name)
            except BaseException as exc:  # reported by wait()
                self._write_error = self._write_error or exc
            finally:
                with self._budget:
                    self._inflight -= len(blob)
                    self._budget.notify_all()

        self._pending.append(self._pool.submit(job))

    def wait(self) -> None:
        """Every object handed to the writer threads is in place (renamed); raises the first write error."""
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()
        if self._write_error is not None:
            exc, self._write_error = self._write_error, None
            raise exc

    def close(self) -> None:
        """Stop the writer threads (after the writes already handed to them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _write(self, blob: bytes, dest: str, name: str) -> None:
        tmp = f"{self._data_s}/txn/{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                view, done = memoryview(blob), 0
                while done < len(blob):
                    done += os.write(fd, view[done:])
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            raise CvmfsError(f"{self.root} is not an initialised repository (missing {exc.filename})") from exc
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise CvmfsError(f"cannot write object {dest}: {exc.strerror}") from exc
        self.new_paths.append(dest)  # list.append is atomic under the GIL

    def flush(self, many: int = 32) -> None:
        """Make every object written so far durable before a manifest may reference it.

        Few new objects (a republish): fsync them and their directories, touching nothing else.
        Many: one global sync, cheaper than thousands of journal commits.
        """
        self.wait()
        paths, self.new_paths = self.new_paths, []
        if len(paths) > many:
            os.sync()
            return
        for path in paths + sorted({os.path.dirname(p) for p in paths}):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put(self, data: bytes, suffix: str = "") -> str:
        """Compress DATA and store it; return the hex digest of the compressed bytes.

        Certificates and meta-info are always compressed by zlib at its default level (REFERENCE_LEVEL) so
        that a reference replica re-compressing them stores the very same bytes; everything else uses the
        store's (the repository's pinned) compressor."""
        if suffix in RECOMPRESSED_SUFFIXES:
            return self.put_blob(zlib.compress(data, REFERENCE_LEVEL), suffix)
        return self.put_blob(self.compressor.compress(data), suffix)

    def _pays(self, compressed_len: int, raw_len: int) -> bool:
        return compressed_len < raw_len * (1 - RAW_SAVING)

    def _windows_pay(self, read_at, size: int) -> bool:
        """Whether deflate pays on a large file, judged on three windows (start, middle, end)."""
        w = SAMPLE_WINDOW
        raw = packed = 0
        for off in (0, max(0, size // 2 - w // 2), max(0, size - w)):
            piece = read_at(off, w)
            raw += len(piece)
            packed += len(self.compressor.compress(piece))
        return self._pays(packed, raw)

    def _put_file_data(self, data: bytes, suffix: str = "", compress: bool | None = None) -> tuple[str, bool]:
        """Store one whole file (or one chunk, COMPRESS decided for the whole file): (hash, compressed)."""
        if not data:
            return self.put_blob(EMPTY_OBJECT, suffix), True  # the reference's empty object, always deflated
        if compress is None and len(data) > SAMPLE_WHOLE:
            compress = self._windows_pay(lambda off, n: data[off:off + n], len(data))
        if compress is False:
            return self.put_blob(data, suffix), False
        packed = self.compressor.compress(data)
        if compress is None and not self._pays(len(packed), len(data)):
            return self.put_blob(data, suffix), False
        return self.put_blob(packed, suffix), True

    def get(self, hexdigest: str, suffix: str = "") -> bytes:
        """Read, verify and inflate one object (used by the publisher to read its own previous state)."""
        rel = object_relpath(hexdigest, suffix)
        try:
            blob = (self.root / rel).read_bytes()
        except FileNotFoundError as exc:
            raise CvmfsIntegrityError(f"object {rel} is missing from {self.root}") from exc
        verify_blob(blob, hexdigest, f"object {rel}")
        return inflate(blob, f"object {rel}")

    def ingest_bytes(self, data: bytes) -> FileContent:
        """Store file content held in memory (virtual files such as the closure lock)."""
        if len(data) <= self.chunk_size:
            h, packed = self._put_file_data(data)
            return FileContent(len(data), h, compressed=packed)
        compress = self._windows_pay(lambda off, n: data[off:off + n], len(data))
        chunks = []
        for off in range(0, len(data), self.chunk_size):
            piece = data[off:off + self.chunk_size]
            chunks.append(Chunk(off, len(piece), self._put_file_data(piece, SUFFIX_PARTIAL, compress)[0]))
        return FileContent(len(data), None, tuple(chunks), compress)

    def ingest_file(self, path: str | os.PathLike) -> FileContent:
        """Store a regular file: one object, or fixed-size `P` chunks when larger than chunk_size.

        The size is taken from the bytes actually read, so a file changing under us is recorded as
        what was stored, never as a mismatch between catalog size and object content.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CvmfsError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            # read what fstat announces plus one byte (a file that grew is seen growing): no 8 MiB buffer per file
            size = os.fstat(fd).st_size
            first = _read_upto(fd, min(size, self.chunk_size) + 1)
            if len(first) <= self.chunk_size:
                self.stats.count_read(len(first))
                h, packed = self._put_file_data(first)
                return FileContent(len(first), h, compressed=packed)
            compress = self._windows_pay(lambda off, n: os.pread(fd, n, off), max(size, len(first)))
            chunks = []
            offset = 0
            buf = first
            while True:
                if len(buf) < self.chunk_size:
                    buf += _read_upto(fd, self.chunk_size - len(buf))
                piece, buf = buf[:self.chunk_size], buf[self.chunk_size:]
                if not piece:
                    break
                chunks.append(Chunk(offset, len(piece), self._put_file_data(piece, SUFFIX_PARTIAL, compress)[0]))
                offset += len(piece)
            self.stats.count_read(offset)
            return FileContent(offset, None, tuple(chunks), compress)
        except OSError as exc:
            raise CvmfsError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
