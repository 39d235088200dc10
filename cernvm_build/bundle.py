"""Preservation bundles: everything needed to respawn an environment with no network.

Layout (a directory, written beside OUT and renamed when complete):

    OUT/cernvm-bundle.json            marker + inventory (lock name, digest, package count)
    OUT/NAME.lock.toml                the lock, byte for byte (and NAME.lock.toml.sigstore.json if signed)
    OUT/repos/REPO/LOCATION           every package at its repository path
    OUT/repos/REPO/dists/SUITE/...    Debian: Packages(.xz) + Release from apt-ftparchive
    OUT/repos/REPO/repodata/          rpm: createrepo_c over exactly these files

so `fetch --mirror OUT --offline` and `rootfs OUT/NAME.lock.toml DEST` work from it, and apt/dnf can
use `OUT/repos/REPO` as a local repository.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from .closure import digest, read_lock
from .errors import CernVMBuildError
from .fetch import FetchOptions, PackageStore, fetch_closure
from .fsutil import atomic_dir

MARKER = "cernvm-bundle.json"


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def _run(cmd: list[str], cwd: Path) -> bytes:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True)
    if r.returncode:
        raise CernVMBuildError(f"{' '.join(cmd[:2])} failed: {r.stderr.decode().strip()}")
    return r.stdout


def _debian_index(repo_dir: Path, suite: str, components: tuple[str, ...], arch: str, date: str) -> None:
    comp = components[0] if components else "main"
    rel = f"dists/{suite}/{comp}/binary-{arch}"
    (repo_dir / rel).mkdir(parents=True, exist_ok=True)
    packages = _run(["apt-ftparchive", "packages", "."], repo_dir)
    (repo_dir / rel / "Packages").write_bytes(packages)
    (repo_dir / rel / "Packages.xz").write_bytes(lzma.compress(packages))
    opts = []
    for k, v in (("Suite", suite), ("Codename", suite), ("Components", comp), ("Architectures", arch),
                 ("Label", "cernvm-build bundle")):
        opts += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
    env_date = ["-o", f"APT::FTPArchive::Release::Date={date}"] if date else []
    release = _run(["apt-ftparchive", *opts, *env_date, "release", f"dists/{suite}"], repo_dir)
    (repo_dir / f"dists/{suite}/Release").write_bytes(release)


def make_bundle(lock_path: str | Path, out: str | Path, cache: str | Path | None = None,
                mirrors: tuple[Path, ...] = (), offline: bool = False, jobs: int = 4) -> Path:
    lock_path, out = Path(lock_path), Path(out)
    closure = read_lock(lock_path)
    store = PackageStore.at(cache)
    fetch_closure(closure, store, FetchOptions(mirrors=mirrors, offline=offline, jobs=jobs))
    text = lock_path.read_bytes()
    with atomic_dir(out) as tmp:
        (tmp / lock_path.name).write_bytes(text)
        sig = lock_path.with_name(lock_path.name + ".sigstore.json")
        if sig.exists():
            shutil.copyfile(sig, tmp / sig.name)
        for p in closure.packages:
            loc = Path(p.location)
            if loc.is_absolute() or ".." in loc.parts:
                raise CernVMBuildError(f"package {p.name}: unsafe location {p.location!r} in the lock")
            _link_or_copy(store.path(p.sha256), tmp / "repos" / p.repository / loc)
        for r in closure.repositories:
            repo_dir = tmp / "repos" / r.name
            if not repo_dir.exists():
                continue
            if closure.flavour == "deb":
                _debian_index(repo_dir, r.suite or "stable", r.components, closure.arch, r.date)
            else:
                _run(["createrepo_c", "--quiet", "--no-database", "--set-timestamp-to-revision",
                      "--revision", r.revision or "0", "."], repo_dir)
        inventory = {"bundle-version": 1, "lock": lock_path.name, "lock-digest": digest(text),
                     "name": closure.name, "flavour": closure.flavour, "packages": len(closure.packages),
                     "repositories": sorted(r.name for r in closure.repositories)}
        (tmp / MARKER).write_text(json.dumps(inventory, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
    return out
