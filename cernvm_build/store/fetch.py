"""Fetch exactly a lock's packages into the content store, verified against the lock.

The lock's sha256 is the only trust anchor: a package file enters the store (util.content_store)
only after its size and sha256 matched, so anything found there later is used without re-reading.
Sources are tried in order: the cache, local mirrors (a repository-shaped tree, a preservation
bundle or a flat directory), then the repository URL from the lock (unless --offline). Network
downloads go through http.download_resumable: a partial file is resumed with an HTTP Range request,
and a short or broken transfer is retried from where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cernvm_build.errors import FetchError, MissingPackagesError, PackageChecksumError
from cernvm_build.lock.lockfile import Closure, LockedPackage
from cernvm_build.util import http
from cernvm_build.util.content_store import ContentStore

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass
class FetchReport:
    """What happened per package: the counts the CLI prints and tests assert on."""

    cached: list[str] = field(default_factory=list)
    mirrored: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bytes_transferred: int = 0
    resumed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.cached)} cached, {len(self.mirrored)} from mirror, {len(self.downloaded)} "
                f"downloaded ({self.bytes_transferred / 2**20:.1f} MiB"
                + (f", {len(self.resumed)} resumed" if self.resumed else "") + ")")


def package_url(closure: Closure, pkg: LockedPackage) -> str:
    repo = closure.repository(pkg.repository)
    if repo is None:  # read_lock already checks this; kept for closures built in memory
        raise FetchError(f"package {pkg.name}: repository '{pkg.repository}' is not in the lock")
    return repo.url.rstrip("/") + "/" + pkg.location.lstrip("/")


def mirror_candidates(mirror: Path, pkg: LockedPackage) -> list[Path]:
    """Where a package may sit in a local mirror: repository layout, bundle layout, flat directory."""
    loc = pkg.location.lstrip("/")
    if ".." in Path(loc).parts:
        return []
    return [mirror / loc, mirror / "repos" / pkg.repository / loc, mirror / pkg.repository / loc,
            mirror / Path(loc).name, mirror / "packages" / "sha256" / pkg.sha256[:2] / pkg.sha256]


class _Progress:
    """One self-overwriting stderr line on a terminal; silent otherwise (logs, CI)."""

    def __init__(self, total_files: int, total_bytes: int, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.files, self.total_files = 0, total_files
        self.bytes, self.total_bytes = 0, total_bytes
        self.lock = threading.Lock()
        self.last = 0.0

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self._draw()

    def done(self, n_bytes_skipped: int = 0) -> None:
        with self.lock:
            self.files += 1
            self.bytes += n_bytes_skipped
            self._draw(force=self.files == self.total_files)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        sys.stderr.write(f"\rfetch: {self.files}/{self.total_files} packages, "
                         f"{self.bytes / 2**20:.1f}/{self.total_bytes / 2**20:.1f} MiB ")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _copy_from_mirror(src: Path, tmp: Path) -> None:
    shutil.copyfile(src, tmp)


@dataclass
class FetchOptions:
    mirrors: tuple[Path, ...] = ()
    offline: bool = False
    jobs: int = 4
    retries: int = 4
    progress: bool | None = None        # None: only on a terminal


def fetch_closure(closure: Closure, store: ContentStore, options: FetchOptions | None = None,
                  packages: Iterable[LockedPackage] | None = None) -> FetchReport:
    """Make every package of CLOSURE present and verified in STORE. Raises after trying all of them."""
    options = options or FetchOptions()
    todo = list(packages if packages is not None else closure.packages)
    report = FetchReport()
    progress = _Progress(len(todo), sum(p.size for p in todo), options.progress)
    errors: list[Exception] = []
    lock = threading.Lock()

    def one(pkg: LockedPackage) -> None:
        if store.has(pkg):
            with lock:
                report.cached.append(pkg.name)
            progress.done(pkg.size)
            return
        for mirror in options.mirrors:
            for cand in mirror_candidates(Path(mirror), pkg):
                if cand.is_file():
                    tmp = store.tmpfile(pkg)
                    _copy_from_mirror(cand, tmp)
                    store.admit(tmp, pkg, str(cand))
                    with lock:
                        report.mirrored.append(pkg.name)
                    progress.done(pkg.size)
                    return
        if options.offline:
            with lock:
                report.missing.append(f"{pkg.name} {pkg.evr} ({pkg.location})")
            progress.done(0)
            return
        url = package_url(closure, pkg)
        part = store.partial(pkg.sha256)
        if url.startswith("file://"):
            src = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            if not src.is_file():
                raise http.NotFound(f"{url}: not found")
            tmp = store.tmpfile(pkg)
            _copy_from_mirror(src, tmp)
            store.admit(tmp, pkg, url)
            n = pkg.size
        else:
            before = part.stat().st_size if part.exists() else 0
            resumed = http.download_resumable(url, part, pkg.size, options.retries, progress.add_bytes)
            n = pkg.size - before if resumed else pkg.size
            store.admit(part, pkg, url)
            if resumed:
                with lock:
                    report.resumed.append(pkg.name)
        with lock:
            report.downloaded.append(pkg.name)
            report.bytes_transferred += n
        progress.done(0 if not url.startswith("file://") else pkg.size)

    def guarded(pkg: LockedPackage) -> None:
        try:
            one(pkg)
        except (FetchError, OSError) as exc:
            with lock:
                errors.append(exc if isinstance(exc, FetchError) else
                              FetchError(f"package {pkg.name}: {exc}"))

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        list(pool.map(guarded, sorted(todo, key=lambda p: -p.size)))
    if errors:
        errors.sort(key=str)
        first = errors[0]
        if len(errors) == 1:
            raise first
        cls = PackageChecksumError if any(isinstance(e, PackageChecksumError) for e in errors) else FetchError
        raise cls(f"{len(errors)} packages failed; first: {first}")
    if report.missing:
        report.missing.sort()
        raise MissingPackagesError(
            f"--offline: {len(report.missing)} of {len(todo)} packages are neither in the cache "
            f"({store.root}) nor in a mirror", report.missing)
    return report


def package_paths(closure: Closure, store: ContentStore) -> dict[str, Path]:
    """name -> verified file, for packages already in the store (after fetch_closure)."""
    out = {}
    for p in closure.packages:
        if not store.has(p):
            raise FetchError(f"package {p.name} {p.evr} is not in the package cache {store.root}; "
                             "run `cernvm-build fetch` first")
        out[p.name] = store.package(p.sha256)
    return out
