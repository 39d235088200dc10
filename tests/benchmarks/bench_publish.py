#!/usr/bin/env python3
"""Benchmark: publish a real tree into CernVM-FS next to the reference publisher, `mksquashfs` and `ostree commit`.

Run alone (not collected as a timed test):
    .venv/bin/python tests/benchmarks/bench_publish.py [--source DIR ...] [--workdir DIR] [--keep]
        [--rounds 3] [--compressor libdeflate:6] [--compare zlib:6 --compare zlib:4] [--reference SWISSKNIFE]

The sources (default /usr/lib/python3, /usr/share/doc, /usr/bin) are copied into one tree first, so every
tool reads the same, page-cached files. Full publishes run as separate processes (ours: `publish()` in a
fresh interpreter, timed inside it and from outside; wall time, CPU = user + system, peak RSS from wait4),
each into a fresh repository, alternating ours / the reference ROUNDS times; medians are printed with each
run's output size (bytes of new objects under data/). Then ostree and mksquashfs once, then ROUNDS
republishes of the unchanged tree and of a tree with 1 % of its files changed (in process), as a percentage
of the median full publish (its time inside the process, as the republishes are timed).

The reference: `cvmfs_swissknife sync` (the engine of `cvmfs_server publish`) from cvmfs built from source,
found by --reference, $CVMFS_SWISSKNIFE or /work/ref-cvmfs/build/cvmfs/cvmfs_swissknife. It runs as
`cvmfs_server publish` runs it with the defaults (SHA-1, zlib default level, 2 cores), given the union-fs
layout it expects: the tree is both the union view (-u) and the scratch area (-s, everything new) over an
empty read-only base (-c), on top of an empty repository's root catalog (-b). It needs
/var/spool/cvmfs/FQRN/ (its statistics database), created here. Without it, the rows compare with our own
publish at --compare's compressors (zlib:6 writes what cvmfs_server writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish  # noqa: E402

DEFAULT_SOURCES = ["/usr/lib/python3", "/usr/share/doc", "/usr/bin"]
FQRN = "bench.example.org"
KNOWN_SWISSKNIFE = "/work/ref-cvmfs/build/cvmfs/cvmfs_swissknife"

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
if {level}:  # a checkout from before compressor pins (--baseline): zlib at a level, fresh repository
    init_repository({repo!r}, "{fqrn}", {keys!r})
t = time.perf_counter()
r = publish({tree!r}, {repo!r}, {keys!r}, PublishOptions(tag="full", workers={workers},
            **({{"compression_level": {level}}} if {level} else {{}})))
print(json.dumps({{"inside": time.perf_counter() - t, "phases": r.phases}}))
"""


def tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if not os.path.islink(os.path.join(dirpath, f)):
                files += 1
                size += st.st_size
    return files, size


def objects_bytes(repo: Path) -> int:
    total = 0
    for sub in (repo / "data").iterdir():
        if len(sub.name) == 2:
            total += sum(e.stat().st_size for e in os.scandir(sub))
    return total


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_measured(cmd: list[str]) -> tuple[float, float, float, str]:
    """Run CMD in its own process and reap it with wait4, so its CPU time and peak RSS are its own."""
    t = time.perf_counter()
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, out_f.fileno(), 1), (os.POSIX_SPAWN_DUP2, err_f.fileno(), 2)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read().decode(), err_f.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed ({os.waitstatus_to_exitcode(status)}):\n{err[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out


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


def find_reference(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("CVMFS_SWISSKNIFE"), KNOWN_SWISSKNIFE):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", action="append", help="directories to copy into the tree (repeatable)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--rounds", type=int, default=3, help="alternating full publishes of each kind (medians)")
    ap.add_argument("--compressor", default="libdeflate:6", help="our compressor (NAME:LEVEL), default libdeflate:6")
    ap.add_argument("--compare", action="append",
                    help="also time full publishes with these compressors (default zlib:6 = cvmfs_server's bytes)")
    ap.add_argument("--reference", help=f"cvmfs_swissknife (default $CVMFS_SWISSKNIFE or {KNOWN_SWISSKNIFE})")
    ap.add_argument("--workers", type=int, default=0, help="our worker threads (0: one per core)")
    ap.add_argument("--skip-others", action="store_true", help="skip ostree and mksquashfs")
    ap.add_argument("--baseline", action="append", default=[], metavar="CHECKOUT:LEVEL",
                    help="also time another checkout of cernvm-build from before compressor pins at this zlib "
                         "level (before/after figures in one run), e.g. /work/main:4")
    args = ap.parse_args()
    compare = args.compare if args.compare is not None else ["zlib:6"]
    sources = args.source or DEFAULT_SOURCES
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-publish-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "tree"
    swissknife = find_reference(args.reference)
    try:
        if not tree.exists():
            for src in sources:
                dest = tree / src.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                run(["cp", "-a", src, str(dest)])
        files, size = tree_stats(tree)
        mb = size / 1e6
        print(f"tree: {', '.join(sources)} -> {files} files, {mb:.1f} MB; {os.cpu_count()} cores; "
              f"load {os.getloadavg()[0]:.2f}")
        keys = work / "keys"
        if not keys.exists():
            init_repository(work / "keys-repo", FQRN, keys)

        def fresh_repo(name: str, compressor: str) -> tuple[Path, int]:
            repo = work / name
            shutil.rmtree(repo, ignore_errors=True)
            init_repository(repo, FQRN, keys, compressor=compressor)
            os.sync()  # no run pays for the previous one's dirty pages
            return repo, objects_bytes(repo)

        def ours(spec: str, checkout: Path = ROOT, level: int = 0) -> dict:
            if level:
                repo, before = work / "ours", 0
                shutil.rmtree(repo, ignore_errors=True)
                os.sync()
            else:
                repo, before = fresh_repo("ours", spec)
            code = CHILD.format(root=str(checkout), tree=str(tree), repo=str(repo), keys=str(keys),
                                workers=args.workers, level=level, fqrn=FQRN)
            wall, cpu, rss, out = run_measured([sys.executable, "-c", code])
            info = json.loads(out.strip().splitlines()[-1])
            return dict(wall=wall, cpu=cpu, rss=rss, inside=info["inside"], out=objects_bytes(repo) - before,
                        phases=info["phases"])

        def reference() -> dict:
            repo, before = fresh_repo("reference", "zlib:6")
            manifest = (repo / ".cvmfspublished").read_bytes().split(b"\n--\n")[0].decode("latin-1")
            base = next(line[1:] for line in manifest.split("\n") if line.startswith("C"))
            for d in ("rdonly", "ref-tmp"):
                shutil.rmtree(work / d, ignore_errors=True)
                (work / d).mkdir()
            Path(f"/var/spool/cvmfs/{FQRN}").mkdir(parents=True, exist_ok=True)
            cmd = [swissknife, "sync", "-u", str(tree), "-s", str(tree), "-c", str(work / "rdonly"),
                   "-t", str(work / "ref-tmp"), "-b", base, "-r", f"local,{repo}/data/txn,{repo}",
                   "-w", f"file://{repo}", "-o", str(work / "ref-manifest"), "-e", "sha1", "-Z", "default",
                   "-N", FQRN, "-K", str(keys / f"{FQRN}.pub"), "-f", "overlayfs"]
            wall, cpu, rss, _ = run_measured(cmd)
            return dict(wall=wall, cpu=cpu, rss=rss, inside=wall, out=objects_bytes(repo) - before)

        kinds: dict[str, callable] = {}
        if swissknife:
            kinds["reference sync (zlib 6)"] = reference
        else:
            print("reference cvmfs_swissknife not found (--reference, $CVMFS_SWISSKNIFE): comparing with ours only")
        kinds[f"ours ({args.compressor})"] = lambda: ours(args.compressor)
        for spec in compare:
            kinds[f"ours ({spec})"] = lambda spec=spec: ours(spec)
        for b in args.baseline:
            checkout, _, level = b.rpartition(":")
            kinds[f"before (zlib:{level})"] = lambda c=checkout, lv=int(level): ours("", Path(c), lv)
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for i in range(args.rounds):
            for name, fn in kinds.items():
                r = fn()
                runs[name].append(r)
                print(f"  round {i + 1} {name:<28} {r['wall']:6.2f} s wall  {r['cpu']:6.2f} s CPU  "
                      f"{r['rss']:5.0f} MB RSS  {r['out'] / 1e6:7.1f} MB out  (load {os.getloadavg()[0]:.2f})",
                      flush=True)
        print(f"\nfull publish, medians of {args.rounds} alternating runs (separate processes):")
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "cpu", "rss", "out", "inside")}
               for k, v in runs.items()}
        anchor = "reference sync (zlib 6)" if swissknife else next(
            (f"ours ({s})" for s in compare if s == "zlib:6"), f"ours ({args.compressor})")
        for name, m in med.items():
            print(f"{name:<28} {m['wall']:6.2f} s  {files / m['wall']:6.0f} files/s  CPU {m['cpu']:6.2f} s  "
                  f"RSS {m['rss']:4.0f} MB  out {m['out'] / 1e6:6.1f} MB ({100 * m['out'] / size:.1f} % of input)  "
                  f"speed-up vs {anchor.split(' (')[0]}: {med[anchor]['wall'] / m['wall']:.2f}x")
        if swissknife:  # the speed-up in each round (runs side by side), not only of the medians
            main_k = f"ours ({args.compressor})"
            per = [r["wall"] / o["wall"] for r, o in zip(runs[anchor], runs[main_k])]
            print(f"per-round speed-up of {main_k} vs the reference: " + ", ".join(f"{x:.2f}x" for x in per))
            cpu = [r["cpu"] / o["cpu"] for r, o in zip(runs[anchor], runs[main_k])]
            print(f"per-round CPU-seconds ratio (reference / {main_k}), robust on a shared machine: "
                  + ", ".join(f"{x:.2f}x" for x in cpu))

        full = med[f"ours ({args.compressor})"]
        results: dict[str, float] = {}

        def report(name: str, seconds: float, extra: str = "") -> None:
            results[name] = seconds
            print(f"{name:<28} {seconds:8.2f} s  {files / seconds:9.0f} files/s  {mb / seconds:8.1f} MB/s  {extra}")

        print()
        if not args.skip_others:
            sq = work / "tree.sqfs"
            if shutil.which("mksquashfs"):
                os.sync()
                t, _, _, _ = run_measured(["mksquashfs", str(tree), str(sq), "-noappend", "-quiet", "-no-progress"])
                report("mksquashfs (gzip)", t, f"image {sq.stat().st_size / 1e6:.1f} MB")
            if shutil.which("ostree"):
                orepo = work / "ostree"
                shutil.rmtree(orepo, ignore_errors=True)
                run(["ostree", "init", f"--repo={orepo}", "--mode=archive"])
                os.sync()
                t, _, _, _ = run_measured(["ostree", "commit", f"--repo={orepo}", "--branch=bench",
                                           f"--tree=dir={tree}", "--subject=bench"])
                report("ostree commit (archive)", t)
            for other in ("ostree commit (archive)", "mksquashfs (gzip)"):
                if other in results:
                    print(f"speed-up of full publish ({args.compressor}) vs {other}: "
                          f"{results[other] / full['wall']:.2f}x")

        repo, _ = fresh_repo("ours", args.compressor)
        publish(tree, repo, keys, PublishOptions(tag="full", workers=args.workers))
        unchanged, one = [], []
        for i in range(args.rounds):
            t = time.perf_counter()
            r = publish(tree, repo, keys, PublishOptions(tag=f"unchanged-{i}", workers=args.workers))
            unchanged.append(time.perf_counter() - t)
            print(f"  republish unchanged {unchanged[-1]:.3f} s: {r.files_read} files read, "
                  f"{r.data_objects_written} new data objects, {r.catalogs_written} catalogs written; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r.phases.items()))
            changed = change_one_percent(tree)
            os.sync()
            t = time.perf_counter()
            r = publish(tree, repo, keys, PublishOptions(tag=f"one-percent-{i}", workers=args.workers))
            one.append(time.perf_counter() - t)
            print(f"  republish 1% changed {one[-1]:.3f} s: {changed} files changed, {r.files_read} read, "
                  f"{r.data_objects_written} new data objects, {r.catalogs_written}/{r.catalogs} catalogs written; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r.phases.items()))
        for name, ts in (("republish unchanged", unchanged), ("republish 1% changed", one)):
            m = statistics.median(ts)
            print(f"{name:<22} median {m:.3f} s = {100 * m / full['inside']:.1f} % of the full publish "
                  f"({full['inside']:.2f} s inside its process)")
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
