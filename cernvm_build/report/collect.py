"""What the release page shows, read from the repository itself into plain dataclasses.

For every named tag: the tag (revision, date, root hash), the closure lock stored in the snapshot at
/.cernvm/closure.lock.toml and its signature bundle beside it, the tree's size (root catalog
statistics), the installed size of each package (the snapshot's dpkg database, when it has one) and
the closure diff against the previous tag of the same release (same lock name). Nothing here reads
the clock or the host: the same repository gives the same data.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.cvmfs.history import TRUNK, TRUNK_PREVIOUS, Tag
from cernvm_build.cvmfs.manifest import Whitelist
from cernvm_build.cvmfs.publish import LOCK_TREE_PATH, SIGNATURE_TREE_PATH
from cernvm_build.cvmfs.reader import Repository, Source, open_source
from cernvm_build.errors import CernVMBuildError, CvmfsError, LockError, LockSignatureError, ReportError
from cernvm_build.lock.diff import ClosureDiff, diff
from cernvm_build.lock.lockfile import Closure, LockedPackage, digest, loads

log = logging.getLogger(__name__)

DPKG_STATUS = "/var/lib/dpkg/status"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,100}$")


@dataclass(frozen=True)
class Trust:
    """How to check lock signatures (optional): public keys for key-signed bundles, an identity for keyless."""

    keys: tuple[Path, ...] = ()
    identity: str | None = None
    issuer: str | None = None
    trusted_root: Path | None = None


@dataclass(frozen=True)
class SignatureInfo:
    state: str                 # "unsigned", "key", "keyless", "invalid"
    signer: str = ""           # key id, or the keyless identity
    issuer: str = ""
    verified: bool | None = None   # True/False: checked with --key/--identity; None: not checked
    note: str = ""             # why invalid / not verified, one line

    @property
    def label(self) -> str:
        if self.state == "unsigned":
            return "unsigned"
        if self.state == "invalid":
            return f"invalid signature: {self.note}"
        who = f"key {self.signer}" if self.state == "key" else f"{self.signer or '?'} (issuer {self.issuer or '?'})"
        return f"signed by {who}"


@dataclass(frozen=True)
class PackageSize:
    name: str
    version: str
    repository: str
    download: int               # bytes of the package file (from the lock)
    installed: int | None       # bytes installed (dpkg's Installed-Size), if the snapshot records it


@dataclass
class TagReport:
    tag: Tag
    slug: str                               # directory name under tags/ (safe in URLs and file systems)
    tree_bytes: int = 0                     # regular files' bytes in the snapshot (catalog statistics)
    tree_files: int = 0
    lock_data: bytes | None = None
    lock_digest: str = ""
    closure: Closure | None = None
    lock_problem: str = ""                  # why the stored lock could not be read
    signature_data: bytes | None = None
    signature: SignatureInfo = field(default_factory=lambda: SignatureInfo("unsigned"))
    packages: list[PackageSize] = field(default_factory=list)
    kernel: LockedPackage | None = None
    previous: str | None = None             # previous tag of the same release
    diff: ClosureDiff | None = None

    @property
    def release(self) -> str:
        return self.closure.name if self.closure is not None else "(no lock)"

    @property
    def installed_bytes(self) -> int | None:
        """Sum of the packages' installed sizes, when every package has one."""
        if not self.packages or any(p.installed is None for p in self.packages):
            return None
        return sum(p.installed for p in self.packages)


@dataclass
class ReportData:
    location: str                           # as given (path or URL): used in the commands the page shows
    fqrn: str
    revision: int
    manifest_timestamp: int
    whitelist: Whitelist | None
    whitelist_signature_checked: bool
    tags: list[TagReport]                   # newest first (revision, then name)
    all_tags: list[str]                     # every named tag of the repository, sorted
    problems: list[str] = field(default_factory=list)   # warnings worth a line on stderr


def tag_slug(name: str) -> str:
    if _SAFE.match(name) and name not in (".", ".."):
        return name
    clean = re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:60].strip("._") or "tag"
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def open_report_source(location: str | Path) -> Source:
    """The repository's source; a directory that is not a repository is one line."""
    try:
        source = open_source(location)
    except CvmfsError as exc:
        raise ReportError(f"{location}: not a CernVM-FS repository ({exc})") from exc
    try:
        source.get(".cvmfspublished")
    except CvmfsError as exc:
        raise ReportError(f"{location}: not a CernVM-FS repository (no .cvmfspublished: {exc})") from exc
    return source


def collect(location: str | Path, *, tags: list[str] | None = None, master_keys=None,
            trust: Trust | None = None) -> ReportData:
    """Read everything the page shows. TAGS limits the page to those tags (unknown ones are an error)."""
    source = open_report_source(location)
    trust = trust or Trust()
    with Repository(source, master_keys=master_keys or [], allow_expired_whitelist=True) as repo:
        named = [t for t in repo.tags() if t.name not in (TRUNK, TRUNK_PREVIOUS)]
        known = sorted(t.name for t in named)
        if tags:
            unknown = [t for t in tags if t not in known]
            if unknown:
                raise ReportError(f"repository {repo.fqrn} has no tag {unknown[0]!r} "
                                  f"(known: {', '.join(known) or 'none'})")
        data = ReportData(location=str(location), fqrn=repo.fqrn, revision=repo.manifest.revision,
                          manifest_timestamp=repo.manifest.timestamp, whitelist=repo.whitelist,
                          whitelist_signature_checked=repo.whitelist_signature_checked, tags=[], all_tags=known)
        # every tag is read (the diff needs the previous one of each release), the page shows the chosen
        ordered = sorted(named, key=lambda t: (t.revision, t.name))
        reports = [_read_tag(source, master_keys, t, trust, data.problems) for t in ordered]
    slugs: set[str] = set()
    for r in reports:
        while r.slug in slugs:                      # two names that clean up to one slug
            r.slug = tag_slug(r.slug + "~")
        slugs.add(r.slug)
    last: dict[str, TagReport] = {}
    for r in reports:
        if r.closure is None:
            continue
        prev = last.get(r.closure.name)
        if prev is not None:
            r.previous = prev.tag.name
            r.diff = diff(prev.closure, r.closure, prev.lock_digest, r.lock_digest)
        last[r.closure.name] = r
    chosen = set(tags) if tags else None
    data.tags = [r for r in reversed(reports) if chosen is None or r.tag.name in chosen]
    return data


def _read_tag(source: Source, master_keys, tag: Tag, trust: Trust, problems: list[str]) -> TagReport:
    r = TagReport(tag=tag, slug=tag_slug(tag.name))
    with Repository(source, master_keys=master_keys or [], allow_expired_whitelist=True, tag=tag.name) as snap:
        stats = snap.root_catalog.statistics()
        r.tree_bytes = int(stats.get("self_file_size", 0)) + int(stats.get("subtree_file_size", 0))
        r.tree_files = int(stats.get("self_regular", 0)) + int(stats.get("subtree_regular", 0))
        r.lock_data = _optional_file(snap, LOCK_TREE_PATH)
        if r.lock_data is None:
            return r
        r.lock_digest = digest(r.lock_data)
        try:
            r.closure = loads(r.lock_data.decode("utf-8"), f"{LOCK_TREE_PATH} of tag {tag.name}")
        except (LockError, UnicodeDecodeError) as exc:
            r.lock_problem = str(exc).splitlines()[0]
            problems.append(f"tag {tag.name}: {r.lock_problem}")
            return r
        r.signature_data = _optional_file(snap, SIGNATURE_TREE_PATH)
        installed = _installed_sizes(snap, tag.name, problems) if r.closure.flavour == "deb" else {}
    r.signature = describe_signature(r.signature_data, r.lock_data, tag.name, trust)
    if r.signature.verified is False or r.signature.state == "invalid":
        problems.append(f"tag {tag.name}: {r.signature.label}" + (f" ({r.signature.note})" if r.signature.note
                                                                    and r.signature.state != "invalid" else ""))
    r.packages = sorted((PackageSize(p.name, p.evr, p.repository, p.size, installed.get((p.name, p.arch)))
                         for p in r.closure.packages), key=lambda p: (p.name, p.version))
    try:
        from cernvm_build.boot.kernel import find_kernel_package

        r.kernel = find_kernel_package(r.closure)
    except CernVMBuildError:
        r.kernel = None
    return r


def _optional_file(snap: Repository, path: str) -> bytes | None:
    try:
        entry = snap.lookup(path)
    except CvmfsError:
        return None
    if not entry.is_regular:
        return None
    return b"".join(snap.iter_content(entry))


def _installed_sizes(snap: Repository, tag: str, problems: list[str]) -> dict[tuple[str, str], int]:
    """(package, arch) -> installed bytes, from the snapshot's dpkg database (Installed-Size is in KiB)."""
    from cernvm_build.formats.deb.control import parse_stanzas

    raw = _optional_file(snap, DPKG_STATUS)
    if raw is None:
        return {}
    try:
        stanzas = parse_stanzas(raw.decode("utf-8", "replace"), f"{DPKG_STATUS} of tag {tag}", ReportError)
    except ReportError as exc:
        problems.append(str(exc))
        return {}
    out: dict[tuple[str, str], int] = {}
    for s in stanzas:
        size = s.get("installed-size", "")
        state = (s.get("status", "").split() or ["?"])[-1]     # unpack mode leaves "install ok unpacked"
        if s.get("package") and size.isdigit() and state not in ("not-installed", "config-files"):
            out[(s["package"], s.get("architecture", ""))] = int(size) * 1024
    return out


def describe_signature(bundle: bytes | None, lock_data: bytes, tag: str, trust: Trust) -> SignatureInfo:
    """Who signed the stored lock; verified when the report was given the key (or keyless identity)."""
    from cernvm_build.trust.signing import describe_bundle

    if bundle is None:
        return SignatureInfo("unsigned")
    where = f"{SIGNATURE_TREE_PATH} of tag {tag}"
    try:
        info = describe_bundle(bundle, lock_data, where)
    except LockSignatureError as exc:
        return SignatureInfo("invalid", note=_strip(str(exc), where))
    state = "keyless" if info.keyless else "key"
    if not info.matches_lock:
        return SignatureInfo("invalid", info.signer, info.issuer,
                             note=f"it signs sha256 {info.subject_sha256[:16]}…, not the stored lock")
    verified, note = _verify(bundle, lock_data, info.keyless, trust)
    return SignatureInfo(state, info.signer, info.issuer, verified, note)


def _strip(message: str, where: str) -> str:
    return message[len(where) + 2:] if message.startswith(where + ": ") else message


def _verify(bundle: bytes, lock_data: bytes, keyless: bool, trust: Trust) -> tuple[bool | None, str]:
    """(True, "") verified; (False, reason) refused by every key given; (None, hint) nothing to check with."""
    import tempfile

    from cernvm_build.trust.signing import verify_lock

    if keyless and not (trust.identity and trust.issuer):
        return None, "not verified here (give --identity and --issuer)"
    if not keyless and not trust.keys:
        return None, "not verified here (give --key)"
    with tempfile.TemporaryDirectory(prefix="report-verify-") as tmp:
        lock = Path(tmp) / "closure.lock.toml"
        sig = Path(tmp) / "closure.lock.toml.sigstore.json"
        lock.write_bytes(lock_data)
        sig.write_bytes(bundle)
        reasons = []
        if keyless:
            from cernvm_build.trust.keyless import KeylessIdentity

            try:
                verify_lock(lock, bundle=sig, identity=KeylessIdentity(trust.identity, trust.issuer,
                                                                       trust.trusted_root))
                return True, ""
            except LockSignatureError as exc:
                reasons.append(_strip(str(exc), str(sig)))
        else:
            for key in trust.keys:
                try:
                    verify_lock(lock, key, sig)
                    return True, ""
                except LockSignatureError as exc:
                    reasons.append(_strip(str(exc), str(sig)).replace(str(key), key.name))
    return False, "does not verify: " + "; ".join(reasons)
