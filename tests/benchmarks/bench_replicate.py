#!/usr/bin/env python3
"""Benchmark: replicate a served repository of a few thousand files (cvmfs replicate) next to a
wget copy of every file of the same served repository (tests/support/plaincopy.py), measured in the same run.

Run alone (not collected as a timed test):
    .venv/bin/python tests/benchmarks/bench_replicate.py [--files N] [--jobs J] [--workdir DIR] [--keep]

The repository is generated (N files of 1-64 KiB of compressible and random bytes, 40 directories,
nested catalogs) and served on loopback by cernvm_build.cvmfs.serve (HTTP/1.0, one connection per
request, as python's http.server does). Prints seconds, objects/s and MB/s for a full replication, an
up-to-date rerun and an incremental run after 1 % of the files changed, and for wget, with the ratio.
The reference replicator (`cvmfs_swissknife pull`) is not available on this machine: it is not measured.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cernvm_build.cvmfs.keys import load_public_key  # noqa: E402
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish  # noqa: E402
from cernvm_build.cvmfs.replicate import replicate  # noqa: E402
from cernvm_build.cvmfs.serve import serve_in_thread  # noqa: E402
from tests.support.plaincopy import wget_copy  # noqa: E402

FQRN = "bench.example.org"


def generate(root: Path, files: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(500)]
    for i in range(files):
        d = root / f"pkg{i % 40:02d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = rnd.randint(1024, 64 * 1024)
        if i % 3:
            body = b" ".join(rnd.choice(words) for _ in range(size // 5))[:size]
        else:
            body = rnd.randbytes(size)
        (d / f"file{i:05d}").write_bytes(body)


def du(path: Path) -> tuple[int, int]:
    n = size = 0
    for p in (path / "data").glob("??/*"):
        if p.name.startswith("index.html"):  # wget's copies of the directory listings
            continue
        n += 1
        size += p.stat().st_size
    return n, size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-replicate-", dir=args.workdir))
    try:
        keys, repo, tree = work / "keys", work / "stratum0", work / "tree"
        generate(tree, args.files)
        init_repository(repo, FQRN, keys)
        publish(tree, repo, keys, PublishOptions(tag="v1", max_catalog_entries=1000, min_catalog_entries=100,
                                                 durable=False))
        n_obj, n_bytes = du(repo)
        print(f"source: {args.files} files, {n_obj} objects, {n_bytes / 1e6:.1f} MB compressed "
              f"(served on loopback by cernvm_build.cvmfs.serve)")
        server, url = serve_in_thread(repo)
        pub = [load_public_key(keys / f"{FQRN}.pub")]
        try:
            def show(label: str, seconds: float, objects: int, nbytes: int) -> None:
                print(f"{label:38s} {seconds:7.2f} s  {objects / seconds:8.0f} objects/s  "
                      f"{nbytes / seconds / 1e6:7.1f} MB/s  ({objects} objects, {nbytes / 1e6:.1f} MB)")

            r = replicate(url, work / "stratum1", pub, workers=args.jobs)
            show(f"cvmfs replicate, full (-j {args.jobs})", r.seconds, r.objects_fetched, r.bytes_fetched)
            full = r.seconds
            r2 = replicate(url, work / "stratum1", pub, workers=args.jobs)
            print(f"{'cvmfs replicate, up to date':38s} {r2.seconds:7.2f} s  (fetched {r2.objects_fetched} objects)")
            # incremental: 1 % of the files change
            changed = sorted(tree.rglob("file*"))[:: 100]
            for p in changed:
                p.write_bytes(os.urandom(2048))
                os.utime(p, (time.time() + 5, time.time() + 5))
            before = {p.name for p in (repo / "data").glob("??/*")}
            publish(tree, repo, keys, PublishOptions(tag="v2", max_catalog_entries=1000, min_catalog_entries=100,
                                                     durable=False))
            new = len({p.name for p in (repo / "data").glob("??/*")} - before)
            r3 = replicate(url, work / "stratum1", pub, workers=args.jobs)
            show(f"cvmfs replicate, incremental ({len(changed)} files)", r3.seconds, r3.objects_fetched,
                 r3.bytes_fetched)
            print(f"{'':38s} new objects in the source: {new}, objects moved: {r3.objects_fetched}")

            if not shutil.which("wget"):
                print("wget: not installed (tools/setup.sh installs it)")
            else:
                wt, wn, wb = wget_copy(url, repo, work / "wget")
                show("wget, every file (no verification)", wt, wn, wb)
                print(f"ratio wget / cvmfs replicate (full): {wt / full:.2f}x")
        finally:
            server.shutdown()
        print("cvmfs_swissknife pull (the reference replicator) is not available on this machine: not measured")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
