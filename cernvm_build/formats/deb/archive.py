"""Debian archives: InRelease (or Release + Release.gpg) checked with gpgv, Packages checked by sha256.

Mirrors apt's rules: the signed Release is the only root of trust; its Suite/Codename must be the
suite asked for; Valid-Until is enforced unless explicitly overridden (historic snapshots), and the
override is logged; indexes are fetched by-hash when the archive offers it, so a mirror update in
the middle of a fetch cannot mix two generations of metadata.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.errors import ChecksumError, MetadataError
from cernvm_build.formats.deb.control import parse_stanzas
from cernvm_build.lock.lockfile import IndexFile, RepositoryRecord
from cernvm_build.lock.recipe import Repository
from cernvm_build.lock.resolve.repository import LoadedRepo, MetadataOptions
from cernvm_build.trust.gpgv import verify_clearsigned, verify_detached
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.files import atomic_path, sha256_bytes, sha256_file
from cernvm_build.util.log import getLogger

log = getLogger(__name__)

COMPRESSIONS = (".xz", ".gz", ".bz2", "")
# the module whose open() reads each compression (imported only when an index is downloaded)
_DECOMPRESS = {".xz": "lzma", ".gz": "gzip", ".bz2": "bz2"}


@dataclass(frozen=True)
class Release:
    """The signed part of a Release file: its fields and the sha256 of every index it lists."""

    fields: dict[str, str]
    sha256: dict[str, tuple[str, int]]     # path below dists/SUITE -> (sha256, size)

    def get(self, key: str) -> str:
        return self.fields.get(key.lower(), "")


def parse_release(text: str, where: str) -> Release:
    stanzas = parse_stanzas(text, where)
    if not stanzas:
        raise MetadataError(f"{where}: empty Release file")
    fields = stanzas[0]
    sums: dict[str, tuple[str, int]] = {}
    for line in fields.get("sha256", "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            sums[parts[2]] = (parts[0].lower(), int(parts[1]))
    if not sums:
        raise MetadataError(f"{where}: Release lists no SHA256 checksums (MD5/SHA1 alone are not trusted)")
    return Release(fields, sums)


def _check_dates(release: Release, where: str, allow_expired: bool, now: float) -> None:
    valid_until = release.get("Valid-Until")
    if not valid_until:
        return
    import email.utils

    try:
        until = email.utils.parsedate_to_datetime(valid_until).timestamp()
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"{where}: unparsable Valid-Until {valid_until!r}") from exc
    if until < now:
        if not allow_expired:
            raise MetadataError(f"{where}: expired: Valid-Until {valid_until} is in the past "
                                "(for a historic snapshot set allow-expired = true or pass --allow-expired)")
        log.warning("%s: Valid-Until %s is in the past; accepted because expired metadata was allowed",
                    where, valid_until)


def _fetch_signed_release(repo: Repository, store: ContentStore, options: MetadataOptions):
    """Returns (metadata path below url, raw bytes of the signed document, Verified)."""
    dists = f"{repo.url}/dists/{repo.suite}"
    pointer = "deb-release-" + hashlib.sha256(f"{repo.url} {repo.suite}".encode()).hexdigest()[:32]
    if options.offline:
        saved = store.read_pointer(pointer)
        if not saved:
            raise MetadataError(f"{dists}/InRelease: not in the cache and --offline was given")
        kind, _, digest = saved.partition(" ")
        path = store.blob(digest)
        if kind == "InRelease":
            return f"dists/{repo.suite}/InRelease", path.read_bytes(), verify_clearsigned(
                path, repo.keyring, f"{dists}/InRelease", memo=store)
        sig_digest = digest.split("+")[1]
        rel = store.blob(digest.split("+")[0])
        return f"dists/{repo.suite}/Release", rel.read_bytes(), verify_detached(
            rel, store.blob(sig_digest), repo.keyring, f"{dists}/Release")
    from cernvm_build.util import http

    try:
        data = http.fetch_bytes(f"{dists}/InRelease")
        digest = sha256_bytes(data)
        blob = store.blob(digest)
        if not blob.exists():
            with atomic_path(blob) as tmp:
                tmp.write_bytes(data)
        verified = verify_clearsigned(blob, repo.keyring, f"{dists}/InRelease", memo=store)
        store.write_pointer(pointer, f"InRelease {digest}")
        return f"dists/{repo.suite}/InRelease", data, verified
    except http.NotFound:
        pass
    try:
        data = http.fetch_bytes(f"{dists}/Release")
    except http.NotFound:
        raise MetadataError(f"repository {repo.name!r}: suite {repo.suite!r} does not exist at {repo.url} "
                            f"(neither dists/{repo.suite}/InRelease nor Release is there)") from None
    sig = http.fetch_bytes(f"{dists}/Release.gpg")
    digest, sig_digest = sha256_bytes(data), sha256_bytes(sig)
    for d, b in ((digest, data), (sig_digest, sig)):
        if not store.blob(d).exists():
            with atomic_path(store.blob(d)) as tmp:
                tmp.write_bytes(b)
    verified = verify_detached(store.blob(digest), store.blob(sig_digest), repo.keyring, f"{dists}/Release")
    store.write_pointer(pointer, f"Release {digest}+{sig_digest}")
    return f"dists/{repo.suite}/Release", data, verified


def _fetch_index(repo: Repository, release: Release, base: str, store: ContentStore,
                 options: MetadataOptions) -> tuple[IndexFile, Path]:
    """Fetch one Packages index (BASE like 'main/binary-amd64/Packages'), verified, decompressed."""
    dists = f"{repo.url}/dists/{repo.suite}"
    plain = release.sha256.get(base)
    # a stored index is used only while it is provably the verified one: its seal, or its digest
    if plain and store.trusted(store.blob(plain[0]), plain[0]):
        return IndexFile(base, plain[0], plain[1]), store.blob(plain[0])
    for ext in COMPRESSIONS:
        listed = release.sha256.get(base + ext)
        if not listed:
            continue
        sha, size = listed
        key = plain[0] if plain else sha
        target = store.blob(key)
        if store.trusted(target, plain[0] if plain else None):
            return IndexFile(base, key, plain[1] if plain else size), target
        if options.offline:
            state = "changed since it was verified" if target.exists() else "not in the cache"
            raise MetadataError(f"{dists}/{base}{ext}: {state} and --offline was given")
        from cernvm_build.util import http
        if release.get("Acquire-By-Hash").lower() == "yes":
            d = base.rsplit("/", 1)[0]
            url = f"{dists}/{d}/by-hash/SHA256/{sha}"
        else:
            url = f"{dists}/{base}{ext}"
        download = store.root / "tmp" / f"{sha}{ext}"
        try:
            http.fetch_to(url, download)
        except http.NotFound:
            if "by-hash" not in url:
                raise
            http.fetch_to(f"{dists}/{base}{ext}", download)
        try:
            got = sha256_file(download)
            if got != sha or download.stat().st_size != size:
                raise ChecksumError(f"{dists}/{base}{ext}: checksum mismatch (Release lists sha256 {sha}, "
                                    f"got {got}): refusing tampered or stale metadata")
            with atomic_path(target) as tmp:
                if ext:
                    import lzma

                    try:
                        with importlib.import_module(_DECOMPRESS[ext]).open(download) as src, \
                                open(tmp, "wb") as out:
                            while block := src.read(1 << 20):
                                out.write(block)
                    except (OSError, EOFError, lzma.LZMAError) as exc:
                        raise MetadataError(f"{dists}/{base}{ext}: cannot decompress: {exc}") from exc
                else:
                    tmp.write_bytes(download.read_bytes())
                got = sha256_file(tmp)
                if plain and got != plain[0]:
                    raise ChecksumError(f"{dists}/{base}: checksum mismatch after decompression "
                                        f"(Release lists {plain[0]}, got {got})")
            store.remember(target, got)
        finally:
            download.unlink(missing_ok=True)
        return IndexFile(base, key, plain[1] if plain else size), target
    raise MetadataError(f"{dists}/Release lists no {base} (is the component or architecture right?)")


def load_deb_repository(repo: Repository, arch: str, store: ContentStore, options: MetadataOptions,
                        now: float | None = None) -> LoadedRepo:
    dists = f"{repo.url}/dists/{repo.suite}"
    metadata, raw, verified = _fetch_signed_release(repo, store, options)
    release = parse_release(verified.content.decode("utf-8", errors="replace"), f"{dists}/{metadata.rsplit('/', 1)[-1]}")
    where = f"{repo.url}/{metadata}"
    if repo.suite not in (release.get("Suite"), release.get("Codename")):
        raise MetadataError(f"{where}: is for suite {release.get('Suite')!r} / codename "
                            f"{release.get('Codename')!r}, not {repo.suite!r} (refusing a substituted Release)")
    _check_dates(release, where, repo.allow_expired or options.allow_expired, time.time() if now is None else now)
    archs = release.get("Architectures").split()
    if archs and arch not in archs:
        raise MetadataError(f"{where}: architecture {arch!r} is not among {' '.join(archs)}")
    # as apt: a separate binary-all index only when the Release lists "all" as an architecture and
    # does not say its arch-specific indexes already carry the arch-all packages
    no_all = "all" not in archs or "packages" in release.get("No-Support-for-Architecture-all").lower()
    indexes: list[IndexFile] = []
    paths: list[Path] = []
    for comp in repo.components:
        bases = [f"{comp}/binary-{arch}/Packages"]
        if not no_all and any(k.startswith(f"{comp}/binary-all/Packages") for k in release.sha256):
            bases.append(f"{comp}/binary-all/Packages")
        for base in bases:
            info, path = _fetch_index(repo, release, base, store, options)
            indexes.append(info)
            paths.append(path)
    record = RepositoryRecord(
        name=repo.name, url=repo.url, metadata=metadata, metadata_sha256=sha256_bytes(raw),
        date=release.get("Date"), suite=repo.suite, components=tuple(repo.components),
        key_fingerprints=verified.fingerprints, indexes=tuple(indexes))
    return LoadedRepo(record=record, indexes=tuple(paths))
