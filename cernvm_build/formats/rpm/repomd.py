"""rpm-md (dnf/yum) repositories: repodata/repomd.xml checked against repomd.xml.asc, indexes by sha256.

Mirrors deb.py's rules: the signed repomd.xml is the only root of trust and only its verified bytes
are parsed; every index it lists (primary, and filelists when asked for) must match the sha256 it
states, and after decompression its open-checksum when one is given; verified, decompressed copies
live in the content-addressed cache, so an offline re-lock re-verifies the signature from cached
bytes and reads nothing else. sha1/md5-only repositories are refused: the lock pins sha256.
"""

from __future__ import annotations

import bz2
import email.utils
import gzip
import hashlib
import lzma
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.errors import ChecksumError, MetadataError
from cernvm_build.lock.lockfile import IndexFile, RepositoryRecord
from cernvm_build.lock.recipe import Repository
from cernvm_build.lock.resolve.repository import LoadedRepo, MetadataOptions
from cernvm_build.trust.gpgv import Verified, verify_detached
from cernvm_build.util import http
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.files import atomic_path, sha256_bytes, sha256_file
from cernvm_build.util.log import getLogger

log = getLogger(__name__)

REPOMD = "repodata/repomd.xml"
_NS = {"repo": "http://linux.duke.edu/metadata/repo"}
_WEAK_SUMS = ("md5", "sha", "sha1", "sha224")


@dataclass(frozen=True)
class RepomdData:
    """One <data> entry of repomd.xml."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int
    open_checksum_type: str = ""
    open_checksum: str = ""
    open_size: int = 0
    timestamp: int = 0


@dataclass(frozen=True)
class Repomd:
    revision: str
    data: dict[str, RepomdData]

    def date(self) -> str:
        """The newest <timestamp> of its data, in Debian's Date: spelling (no wall clock involved)."""
        stamps = [d.timestamp for d in self.data.values() if d.timestamp]
        if not stamps:
            return ""
        return email.utils.formatdate(max(stamps), usegmt=True)


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _int(text: str, where: str, what: str) -> int:
    if not text:
        return 0
    try:
        return int(text)
    except ValueError as exc:
        raise MetadataError(f"{where}: {what} {text!r} is not an integer") from exc


def parse_repomd(content: bytes, where: str) -> Repomd:
    """Parse (verified) repomd.xml bytes. Entries are keyed by type (primary, filelists, other, ...)."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise MetadataError(f"{where}: not valid XML: {exc}") from exc
    if root.tag != f"{{{_NS['repo']}}}repomd":
        raise MetadataError(f"{where}: not a repomd document (root element {root.tag!r})")
    data: dict[str, RepomdData] = {}
    for d in root.findall("repo:data", _NS):
        kind = d.get("type", "")
        loc = d.find("repo:location", _NS)
        cs = d.find("repo:checksum", _NS)
        ocs = d.find("repo:open-checksum", _NS)
        href = loc.get("href", "") if loc is not None else ""
        if not kind or not href or cs is None:
            raise MetadataError(f"{where}: a <data> entry lacks type, location or checksum")
        data[kind] = RepomdData(
            type=kind, href=href, checksum_type=cs.get("type", "").lower(), checksum=_text(cs).lower(),
            size=_int(_text(d.find("repo:size", _NS)), where, f"{kind} size"),
            open_checksum_type=ocs.get("type", "").lower() if ocs is not None else "",
            open_checksum=_text(ocs).lower(),
            open_size=_int(_text(d.find("repo:open-size", _NS)), where, f"{kind} open-size"),
            timestamp=_int(_text(d.find("repo:timestamp", _NS)), where, f"{kind} timestamp"))
    return Repomd(_text(root.find("repo:revision", _NS)), data)


def _store(store: ContentStore, data: bytes) -> str:
    digest = sha256_bytes(data)
    if not store.blob(digest).exists():
        with atomic_path(store.blob(digest)) as tmp:
            tmp.write_bytes(data)
    return digest


def _pointer(repo: Repository) -> str:
    return "rpmmd-repomd-" + hashlib.sha256(repo.url.encode()).hexdigest()[:32]


def _verify(repo: Repository, store: ContentStore, digest: str, sig_digest: str) -> Verified:
    where = f"{repo.url}/{REPOMD}"
    if not repo.gpgcheck:
        log.warning("%s: gpgcheck = false: repository metadata is NOT signature-checked", where)
        return Verified(store.blob(digest).read_bytes(), ())
    return verify_detached(store.blob(digest), store.blob(sig_digest), repo.keyring, where)


def _fetch_signed_repomd(repo: Repository, store: ContentStore, options: MetadataOptions) -> tuple[str, Verified]:
    """Returns (sha256 of repomd.xml, Verified). The signature is re-checked on every load."""
    where = f"{repo.url}/{REPOMD}"
    pointer = _pointer(repo)
    if options.offline:
        saved = store.read_pointer(pointer)
        if not saved:
            raise MetadataError(f"{where}: not in the cache and --offline was given")
        digest, _, sig_digest = saved.partition("+")
        if repo.gpgcheck and not sig_digest:
            raise MetadataError(f"{where}.asc: not in the cache and --offline was given")
        if not store.blob(digest).exists() or (sig_digest and not store.blob(sig_digest).exists()):
            raise MetadataError(f"{where}: cached copy is missing from the cache and --offline was given")
        return digest, _verify(repo, store, digest, sig_digest)
    digest = _store(store, http.fetch_bytes(where))
    sig_digest = ""
    if repo.gpgcheck:
        try:
            sig = http.fetch_bytes(where + ".asc")
        except http.NotFound as exc:
            raise MetadataError(f"{where}.asc: repository metadata is not signed (no repomd.xml.asc); "
                                "refusing it because gpgcheck is on") from exc
        sig_digest = _store(store, sig)
    verified = _verify(repo, store, digest, sig_digest)
    store.write_pointer(pointer, f"{digest}+{sig_digest}" if sig_digest else digest)
    return digest, verified


def _decompress(src: Path, dest: Path, href: str, where: str) -> None:
    """HREF's extension says the compression (as dnf/librepo decide it)."""
    try:
        if href.endswith(".zst"):
            with open(src, "rb") as f, open(dest, "wb") as out:
                proc = subprocess.run(["zstd", "-dcq"], stdin=f, stdout=out, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                raise OSError(proc.stderr.decode(errors="replace").strip())
            return
        opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(Path(href).suffix)
        if opener is None:
            shutil.copyfile(src, dest)
            return
        with opener(src) as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise MetadataError(f"{where}: cannot decompress: {exc}") from exc


def _fetch_index(repo: Repository, entry: RepomdData, store: ContentStore,
                 options: MetadataOptions) -> tuple[IndexFile, Path]:
    """One index (primary/filelists): verified by the sha256 repomd.xml lists, stored decompressed."""
    where = f"{repo.url}/{entry.href}"
    if entry.checksum_type != "sha256":
        raise MetadataError(f"{where}: repomd.xml lists only a {entry.checksum_type or 'missing'} checksum "
                            "for it; the lock pins sha256 (recreate the repository with createrepo_c "
                            "--checksum sha256)")
    if len(entry.checksum) != 64:
        raise MetadataError(f"{where}: repomd.xml lists a malformed sha256 {entry.checksum!r}")
    open_sha = entry.checksum if entry.open_checksum_type != "sha256" else entry.open_checksum
    record = IndexFile(entry.href, entry.checksum, entry.size)
    target = store.blob(open_sha)
    if store.trusted(target, open_sha if entry.open_checksum_type == "sha256" else None):
        return record, target
    if options.offline:
        state = "changed since it was verified" if target.exists() else "not in the cache"
        raise MetadataError(f"{where}: {state} and --offline was given")
    download = store.root / "tmp" / f"{entry.checksum}{Path(entry.href).suffix}"
    http.fetch_to(where, download)
    try:
        got = sha256_file(download)
        if got != entry.checksum or (entry.size and download.stat().st_size != entry.size):
            raise ChecksumError(f"{where}: checksum mismatch (repomd.xml lists sha256 {entry.checksum}, "
                                f"got {got}): refusing tampered or stale metadata")
        with atomic_path(target) as tmp:
            _decompress(download, tmp, entry.href, where)
            got = sha256_file(tmp)
            if entry.open_checksum_type == "sha256" and got != entry.open_checksum:
                raise ChecksumError(f"{where}: checksum mismatch after decompression (repomd.xml "
                                    f"lists open-checksum {entry.open_checksum}, got {got})")
        store.remember(target, got)
    finally:
        download.unlink(missing_ok=True)
    return record, target


def load_rpmmd_repository(repo: Repository, arch: str, store: ContentStore, options: MetadataOptions) -> LoadedRepo:
    """Verified primary (and filelists when asked for) of one rpm-md repository, plus its lock record."""
    where = f"{repo.url}/{REPOMD}"
    digest, verified = _fetch_signed_repomd(repo, store, options)
    repomd = parse_repomd(verified.content, where)
    if "primary" not in repomd.data:
        raise MetadataError(f"{where}: lists no primary metadata")
    wanted = ["primary"] + (["filelists"] if options.with_filelists else [])
    if options.with_filelists and "filelists" not in repomd.data:
        raise MetadataError(f"{where}: lists no filelists metadata, but the recipe asks for file paths")
    records, paths = [], []
    for kind in wanted:
        info, path = _fetch_index(repo, repomd.data[kind], store, options)
        records.append(info)
        paths.append(path)
    record = RepositoryRecord(
        name=repo.name, url=repo.url, metadata=REPOMD, metadata_sha256=digest, date=repomd.date(),
        revision=repomd.revision, key_fingerprints=verified.fingerprints, indexes=tuple(records))
    return LoadedRepo(record=record, indexes=(paths[0],), filelists=tuple(paths[1:]))
