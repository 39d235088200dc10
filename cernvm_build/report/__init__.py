"""The release page: a static, self-contained site describing every snapshot (tag) of a repository.

    build_report("build/debian-bookworm/cvmfs/repo", "build/release-page")

reads each tag's lock (and signature) from the snapshot itself and writes

    OUT/index.html                    the page (inline CSS and SVG; no network assets)
    OUT/report.json                   the same facts for machines
    OUT/charts/tags.svg               packages and size across tags
    OUT/tags/TAG/closure.lock.toml    the stored lock, byte for byte (+ .sigstore.json when signed)
    OUT/tags/TAG/sbom.spdx.json, sbom.cdx.json, packages.svg

Deterministic (the same repository gives the same bytes: no clock, everything sorted) and atomic: the
site is built in a temporary directory beside OUT and renamed onto it, replacing a previous page.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import ReportError
from cernvm_build.report.collect import ReportData, TagReport, Trust, collect
from cernvm_build.report.svg import TagPoint, across_tags, size_by_package

__all__ = ["ReportResult", "Trust", "build_report"]

GENERATOR_MARK = 'content="cernvm-build '          # in index.html's <meta name="generator">


@dataclass
class ReportResult:
    out: Path
    tags: list[str]                       # shown, newest first
    files: int
    bytes: int                            # total size of the site
    seconds: float
    whitelist_expires: int | None         # Unix time
    problems: list[str] = field(default_factory=list)


def build_report(repo: str | os.PathLike, out: str | os.PathLike, *, tags: list[str] | None = None,
                 master_keys: list[Path] | None = None, trust: Trust | None = None,
                 repo_url: str | None = None, top: int = 15) -> ReportResult:
    """Write the release page of REPO (stratum-0/replica directory or http URL) to the directory OUT.

    TAGS limits the page to those tags; MASTER_KEYS check the whitelist's signature; TRUST checks the
    locks' signatures; REPO_URL is the address clients use (for the boot and respawn commands)."""
    from cernvm_build.cvmfs.keys import load_public_key

    started = time.monotonic()
    out = Path(out)
    _check_target(out)
    keys = [load_public_key(p) for p in (master_keys or [])]
    data = collect(str(repo), tags=tags, master_keys=keys, trust=trust)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _lock_dates():
            files = _write_site(data, tmp, repo_url=repo_url, top=top,
                                signing_key_name=(trust.keys[0].name if trust and trust.keys else None))
        size = sum(p.stat().st_size for p in files)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReportResult(out, [t.tag.name for t in data.tags], len(files), size, time.monotonic() - started,
                        data.whitelist.expires if data.whitelist else None, data.problems)


@contextlib.contextmanager
def _lock_dates() -> Iterator[None]:
    """SBOMs dated by their lock alone: a SOURCE_DATE_EPOCH in the environment (a CI job's commit time)
    must not change the page, whose only input is the repository."""
    saved = os.environ.pop("SOURCE_DATE_EPOCH", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["SOURCE_DATE_EPOCH"] = saved


def _check_target(out: Path) -> None:
    """OUT may be new, empty, or a page this command wrote before (never some other directory)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ReportError(f"{out}: exists and is not a directory; give a new or earlier report directory")
    if not any(out.iterdir()):
        return
    try:
        head = (out / "index.html").read_text(errors="replace")[:2000]
    except OSError:
        head = ""
    if GENERATOR_MARK not in head or " report" not in head:
        raise ReportError(f"{out}: exists and is not a release page written by `cernvm-build report`; "
                          "refusing to replace it (give a new directory)")


def _replace_dir(tmp: Path, out: Path) -> None:
    os.chmod(tmp, 0o755)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / "page")
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old / "page", out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _write(root: Path, rel: str, data: bytes | str, written: list[Path]) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, 0o644)
    written.append(path)
    return rel


def _write_site(data: ReportData, root: Path, *, repo_url: str | None, top: int,
                signing_key_name: str | None) -> list[Path]:
    from cernvm_build.lock.sbom import to_cyclonedx, to_spdx
    from cernvm_build.report.html import render

    written: list[Path] = []
    charts: dict[str, str] = {}
    links: dict[str, dict[str, str]] = {}
    for t in data.tags:
        base = f"tags/{t.slug}"
        mine: dict[str, str] = {}
        if t.lock_data is not None:
            mine["lock"] = _write(root, f"{base}/closure.lock.toml", t.lock_data, written)
        if t.signature_data is not None:
            mine["signature"] = _write(root, f"{base}/closure.lock.toml.sigstore.json", t.signature_data, written)
        if t.closure is not None:
            mine["spdx"] = _write(root, f"{base}/sbom.spdx.json", to_spdx(t.closure, t.lock_digest), written)
            mine["cyclonedx"] = _write(root, f"{base}/sbom.cdx.json", to_cyclonedx(t.closure, t.lock_digest),
                                       written)
            chart = _package_chart(t, top)
            charts[f"packages:{t.slug}"] = chart
            _write(root, f"{base}/packages.svg", chart, written)
        links[t.slug] = mine
    if data.tags:
        points = [TagPoint(t.tag.name, t.release, len(t.closure.packages) if t.closure else 0, t.tree_bytes)
                  for t in reversed(data.tags)]
        charts["tags"] = across_tags(points, "Snapshots: packages and tree size", "tree size")
        _write(root, "charts/tags.svg", charts["tags"], written)
    _write(root, "report.json", _json(data, links), written)
    _write(root, "index.html", render(data, charts=charts, links=links, repo_url=repo_url,
                                      signing_key_name=signing_key_name), written)
    return sorted(written)


def _package_chart(t: TagReport, top: int) -> str:
    if t.installed_bytes is not None:
        items = [(p.name, p.installed) for p in t.packages]
        title = f"Installed size by package, {t.tag.name}"
    else:
        items = [(p.name, p.download) for p in t.packages]
        title = f"Download size by package, {t.tag.name} (the snapshot records no installed sizes)"
    return size_by_package(items, title, top=top)


def _json(data: ReportData, links: dict[str, dict[str, str]]) -> str:
    from cernvm_build.lock.diff import KINDS

    def tag(t: TagReport) -> dict:
        c = t.closure
        d = t.diff
        return {
            "name": t.tag.name, "revision": t.tag.revision, "timestamp": t.tag.timestamp, "root_hash": t.tag.hash,
            "release": c.name if c else None, "lock_digest": t.lock_digest or None,
            "signature": {"state": t.signature.state, "signer": t.signature.signer, "issuer": t.signature.issuer,
                          "verified": t.signature.verified},
            "packages": len(c.packages) if c else None,
            "download_bytes": c.total_size() if c else None,
            "installed_bytes": t.installed_bytes, "tree_bytes": t.tree_bytes, "tree_files": t.tree_files,
            "kernel": {"package": t.kernel.name, "version": t.kernel.evr} if t.kernel else None,
            "repositories": [{"name": r.name, "suite": r.suite, "date": r.date or r.revision,
                              "metadata_sha256": r.metadata_sha256} for r in c.repositories] if c else [],
            "previous": t.previous,
            "changes": {k: [{"name": ch.name, "arch": ch.arch, "old": ch.old.evr if ch.old else None,
                             "new": ch.new.evr if ch.new else None,
                             "repository": (ch.new or ch.old).repository} for ch in d.changes[k]]
                        for k in KINDS} if d else None,
            "files": links.get(t.slug, {}),
        }

    doc = {"format": "cernvm-build/release-page/v1", "fqrn": data.fqrn, "revision": data.revision,
           "whitelist_expires": data.whitelist.expires if data.whitelist else None,
           "tags": [tag(t) for t in data.tags]}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
