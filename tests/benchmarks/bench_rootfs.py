"""Benchmark: the minimal Debian tree from a warm cache, against mmdebstrap for the same package set.

Run alone (root, network for the first lock/fetch):
    .venv/bin/python tests/benchmarks/bench_rootfs.py [--recipe R.toml] [--work DIR] [--repeat N]

mmdebstrap gets the same packages and no network: it installs from a preservation bundle made from
the lock (a local apt repository holding exactly the locked .debs), so apt can only choose them.
Prints times, the ratio, tree sizes and file counts.
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

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))

from cernvm_build.cli import main as cli  # noqa: E402
from cernvm_build.lock.lockfile import (
    lock_epoch,  # noqa: E402
    read_lock,  # noqa: E402
)

DEFAULT_RECIPE = HERE.parents[1] / "network" / "minimal-bookworm.toml"


def tree_stats(root: Path) -> tuple[int, int]:
    """(apparent bytes of regular files, number of entries)"""
    size = count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            count += 1
            st = os.lstat(os.path.join(dirpath, n))
            if n in filenames and not os.path.islink(os.path.join(dirpath, n)):
                size += st.st_size
    return size, count


def ensure_mmdebstrap() -> bool:
    if shutil.which("mmdebstrap"):
        return True
    if os.geteuid() != 0:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"], env=env,
                   check=False, stdout=subprocess.DEVNULL)
    return bool(shutil.which("mmdebstrap"))


def timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def run(recipe: Path, work: Path, repeat: int) -> dict:
    cache = work / "cache"
    lock = work / "bench.lock.toml"
    assert cli(["lock", str(recipe), "-o", str(lock), "--cache", str(cache), "-q"]) == 0
    assert cli(["fetch", str(lock), "--cache", str(cache), "-j", "8", "-q"]) == 0      # warm the cache
    closure = read_lock(lock)
    out: dict = {"packages": len(closure.packages), "download_mib": closure.total_size() / 2**20}

    ours = {}
    for mode in ("unpack", "install"):
        times = []
        for i in range(repeat):
            dest = work / f"ours-{mode}-{i}"
            shutil.rmtree(dest, ignore_errors=True)
            times.append(timed(lambda: cli(["rootfs", str(lock), str(dest), "--cache", str(cache),
                                            "--mode", mode, "-q"])))
        ours[mode] = min(times)
    out["ours_unpack_s"], out["ours_install_s"] = ours["unpack"], ours["install"]
    out["ours_bytes"], out["ours_entries"] = tree_stats(work / "ours-install-0")

    if ensure_mmdebstrap():
        bundle = work / "bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        assert cli(["bundle", str(lock), str(bundle), "--cache", str(cache), "-q"]) == 0
        repo = closure.repositories[0]
        source = f"deb [trusted=yes] copy://{bundle}/repos/{repo.name} {repo.suite} {repo.components[0]}"
        requests = [r for r in closure.requests if not r.startswith("@")]
        times = []
        for i in range(repeat):
            dest = work / f"mmdebstrap-{i}"
            shutil.rmtree(dest, ignore_errors=True)
            cmd = ["mmdebstrap", "--quiet", "--mode=root", "--variant=essential",
                   f"--include={','.join(p for p in requests)}" if requests else "--include=apt",
                   "--architectures", closure.arch, repo.suite, str(dest), source]
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(lock_epoch(closure)))
            times.append(timed(lambda: subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)))
        out["mmdebstrap_s"] = min(times)
        out["mmdebstrap_bytes"], out["mmdebstrap_entries"] = tree_stats(work / "mmdebstrap-0")
        q = subprocess.run(["dpkg-query", f"--admindir={work / 'mmdebstrap-0'}/var/lib/dpkg", "-W",
                            "-f", "${Package}\n"], capture_output=True, text=True, check=True)
        theirs = set(q.stdout.split())
        ours_set = {p.name for p in closure.packages}
        out["same_package_set"] = theirs == ours_set
        out["set_difference"] = sorted(theirs ^ ours_set)
        out["ratio_install_vs_mmdebstrap"] = out["ours_install_s"] / out["mmdebstrap_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per builder; the best is reported")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_rootfs: needs root (install mode and mmdebstrap --mode=root chroot)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="cvb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        r = run(args.recipe, work, args.repeat)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"recipe {args.recipe.name}: {r['packages']} packages, {r['download_mib']:.1f} MiB of .debs")
    print(f"cernvm-build rootfs --mode unpack  (warm cache): {r['ours_unpack_s']:6.2f} s")
    print(f"cernvm-build rootfs --mode install (warm cache): {r['ours_install_s']:6.2f} s")
    print(f"  tree: {r['ours_bytes'] / 2**20:.1f} MiB in {r['ours_entries']} entries")
    if "mmdebstrap_s" in r:
        print(f"mmdebstrap --variant=essential (copy:// bundle):{r['mmdebstrap_s']:6.2f} s")
        print(f"  tree: {r['mmdebstrap_bytes'] / 2**20:.1f} MiB in {r['mmdebstrap_entries']} entries")
        print(f"  same package set: {r['same_package_set']}"
              + (f" (differs: {', '.join(r['set_difference'])})" if r["set_difference"] else ""))
        print(f"ratio install / mmdebstrap: {r['ratio_install_vs_mmdebstrap']:.2f}")
    else:
        print("mmdebstrap not available: no comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
