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
import os
import shutil
from pathlib import Path

from cernvm_build import formats
from cernvm_build.errors import CernVMBuildError, LockError
from cernvm_build.lock.lockfile import digest, read_lock
from cernvm_build.store.fetch import FetchOptions, fetch_closure
from cernvm_build.util.content_store import ContentStore, copy_verified
from cernvm_build.util.files import atomic_dir

MARKER = "cernvm-bundle.json"


def make_bundle(lock_path: str | Path, out: str | Path, cache: str | Path | None = None,
                mirrors: tuple[Path, ...] = (), offline: bool = False, jobs: int = 4) -> Path:
    lock_path, out = Path(lock_path), Path(out)
    closure = read_lock(lock_path)
    fmt = formats.get(closure.flavour, LockError, str(lock_path))
    store = ContentStore.at(cache)
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
            # copied, hashed on the way: a bundle never carries a cache file changed after fetch
            dest = tmp / "repos" / p.repository / loc
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_verified(store.package(p.sha256), p, dest)
            os.chmod(dest, 0o644)
        for r in closure.repositories:
            repo_dir = tmp / "repos" / r.name
            if not repo_dir.exists():
                continue
            fmt.index_bundle(repo_dir, r, closure.arch)
        inventory = {"bundle-version": 1, "lock": lock_path.name, "lock-digest": digest(text),
                     "name": closure.name, "flavour": closure.flavour, "packages": len(closure.packages),
                     "repositories": sorted(r.name for r in closure.repositories)}
        (tmp / MARKER).write_text(json.dumps(inventory, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
    return out
