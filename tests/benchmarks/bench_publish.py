#!/usr/bin/env python3
"""Benchmark: publish a real tree into CernVM-FS next to `mksquashfs` and `ostree commit` (archive mode).

Run alone (not collected as a timed test):
    .venv/bin/python tests/benchmarks/bench_publish.py [--source DIR ...] [--workdir DIR] [--keep]

The sources (default /usr/lib/python3, /usr/share/doc, /usr/bin) are copied into one tree first, so
every tool reads the same, page-cached files. Prints wall time, files/s and MB/s of a full publish, an
unchanged republish and a 1 %-changed republish, of mksquashfs and of ostree commit, with ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish  # noqa: E402

DEFAULT_SOURCES = ["/usr/lib/python3", "/usr/share/doc", "/usr/bin"]
FQRN = "bench.example.org"


def tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if not os.path.islink(os.path.join(dirpath, f)):
                files += 1
                size += st.st_size
    return files, size


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def change_one_percent(tree: Path) -> int:
    """Append a line to every 100th regular file (sorted order) and bump its mtime."""
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    changed = 0
    for p in files[::100]:
        with open(p, "ab") as f:
            f.write(b"\n# changed by bench_publish\n")
        os.utime(p, (time.time() + 10, time.time() + 10))
        changed += 1
    return changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", action="append", help="directories to copy into the tree (repeatable)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--level", type=int, default=4, help="zlib level for CernVM-FS objects (library default 4)")
    ap.add_argument("--compare-level", type=int, default=6,
                    help="also time a full publish at this zlib level (6 = cvmfs_server's) into a fresh repository (0: skip)")
    args = ap.parse_args()
    sources = args.source or DEFAULT_SOURCES
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-publish-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "tree"
    try:
        if not tree.exists():
            for src in sources:
                dest = tree / src.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                run(["cp", "-a", src, str(dest)])
        files, size = tree_stats(tree)
        mb = size / 1e6
        cores = os.cpu_count()
        print(f"tree: {', '.join(sources)} -> {files} files, {mb:.1f} MB; {cores} cores")

        results: dict[str, float] = {}

        def settle() -> None:
            """Flush other tools' dirty pages so no run pays for the previous one's writes."""
            os.sync()

        def report(name: str, seconds: float, extra: str = "") -> None:
            results[name] = seconds
            print(f"{name:<28} {seconds:8.2f} s  {files / seconds:9.0f} files/s  {mb / seconds:8.1f} MB/s  {extra}")

        sq = work / "tree.sqfs"
        if shutil.which("mksquashfs"):
            settle()
            t, _ = timed(lambda: run(["mksquashfs", str(tree), str(sq), "-noappend", "-quiet", "-no-progress"]))
            report("mksquashfs (gzip)", t, f"image {sq.stat().st_size / 1e6:.1f} MB")
        else:
            print("mksquashfs: not installed (squashfs-tools)")
        if shutil.which("ostree"):
            orepo = work / "ostree"
            run(["ostree", "init", f"--repo={orepo}", "--mode=archive"])
            settle()
            t, _ = timed(lambda: run(["ostree", "commit", f"--repo={orepo}", "--branch=bench",
                                      f"--tree=dir={tree}", "--subject=bench"]))
            report("ostree commit (archive)", t)
        else:
            print("ostree: not installed")

        keys, repo = work / "keys", work / "stratum0"
        init_repository(repo, FQRN, keys)
        opts = dict(compression_level=args.level)
        settle()
        t, r = timed(lambda: publish(tree, repo, keys, PublishOptions(tag="full", **opts)))
        report("cvmfs publish (full)", t, f"{r.objects_written} objects, {r.bytes_written / 1e6:.1f} MB stored, "
               f"{r.catalogs} catalogs")
        t, r = timed(lambda: publish(tree, repo, keys, PublishOptions(tag="unchanged", **opts)))
        report("cvmfs republish unchanged", t, f"{r.files_read} files read, {r.data_objects_written} new data "
               f"objects, {r.catalogs_written} catalogs written")
        changed = change_one_percent(tree)
        settle()
        t, r = timed(lambda: publish(tree, repo, keys, PublishOptions(tag="one-percent", **opts)))
        report("cvmfs republish 1% changed", t, f"{changed} files changed, {r.files_read} read, "
               f"{r.data_objects_written} new data objects, {r.catalogs_written}/{r.catalogs} catalogs written")

        if args.compare_level:
            repo2 = work / f"stratum0-level{args.compare_level}"
            init_repository(repo2, FQRN, keys)
            settle()
            t, r = timed(lambda: publish(tree, repo2, keys, PublishOptions(
                tag="full", compression_level=args.compare_level)))
            report(f"cvmfs publish (full, zlib {args.compare_level})", t,
                   f"{r.bytes_written / 1e6:.1f} MB stored")
        full = results["cvmfs publish (full)"]
        print()
        for other in ("ostree commit (archive)", "mksquashfs (gzip)"):
            if other in results:
                print(f"speed-up of full publish (zlib {args.level}) vs {other}: {results[other] / full:.2f}x")
                alt = f"cvmfs publish (full, zlib {args.compare_level})"
                if alt in results:
                    print(f"speed-up of full publish (zlib {args.compare_level}) vs {other}: "
                          f"{results[other] / results[alt]:.2f}x")
        for name in ("cvmfs republish unchanged", "cvmfs republish 1% changed"):
            print(f"{name} / full publish: {100 * results[name] / full:.1f} %")
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
