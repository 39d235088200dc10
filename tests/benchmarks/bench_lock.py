#!/usr/bin/env python3
"""Benchmark: `cernvm-build lock` (whole process, cold and warm) next to apt on the same metadata.

Run alone: .venv/bin/python tests/benchmarks/bench_lock.py [--repeat N]
Needs the live Debian archive (bookworm main amd64). Prints times, ratios and closure sizes:
  cold   - empty .solv/side-index cache (the Packages file itself already downloaded): metadata parse
  warm   - everything cached (--offline: signature still checked with gpgv)
  apt    - python-apt in a fresh process: open the (warm) cache over an empty dpkg status + mark the list
           (the resolution alone; timed inside the process, start-up excluded)
  apt-get - `apt-get install --simulate` whole process in an isolated configuration
"""

from __future__ import annotations

import argparse
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

from cernvm_build.lock.lockfile import read_lock  # noqa: E402
from cernvm_build.util.content_store import ContentStore  # noqa: E402
from tests.support.aptref import isolated_config  # noqa: E402

LISTS = [["bash", "coreutils"], ["build-essential", "python3"], ["gnome-core", "build-essential", "python3"]]
CLI = [str(ROOT / ".venv" / "bin" / "cernvm-build")]

APT_TIMER = r'''
import sys, time, json
t0 = time.perf_counter()
import apt_pkg
opts = json.loads(sys.argv[1]); names = sys.argv[2:]
apt_pkg.init_config()
for k, v in opts.items():
    apt_pkg.config.set(k, v)
apt_pkg.init_system()
cache = apt_pkg.Cache(None)
dep = apt_pkg.DepCache(cache)
fix = apt_pkg.ProblemResolver(dep)
pkgs = [cache[n] for n in names]
with apt_pkg.ActionGroup(dep):
    for p in pkgs:
        fix.clear(p); fix.protect(p); dep.mark_install(p, False)
    for p in sorted(pkgs, key=lambda p: p.id):
        dep.mark_install(p, True)
n = sum(1 for p in cache.packages if dep.marked_install(p))
print(time.perf_counter() - t0, n)
'''


def recipe_for(names: list[str], dest: Path) -> Path:
    text = (ROOT / "recipes" / "bench-build-essential-python3.toml").read_text()
    text = text.replace('packages = ["build-essential", "python3"]',
                        "packages = [" + ", ".join(f'"{n}"' for n in names) + "]")
    p = dest / ("-".join(names) + ".toml")
    p.write_text(text)
    return p


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    # as an installed package would have: byte-compiled modules (this sandbox sets
    # PYTHONDONTWRITEBYTECODE, which otherwise makes every run recompile everything)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "cernvm_build")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                   stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="cvb-bench-lock-"))
    cache = work / "cache"
    try:
        # download once (not measured): the first lock fills the blob cache
        first = recipe_for(LISTS[0], work)
        subprocess.run([*CLI, "lock", str(first), "-o", str(work / "warmup.lock"), "--cache", str(cache)],
                       check=True)
        pk = ContentStore(cache).blob(read_lock(work / "warmup.lock").repositories[0].indexes[0].sha256)
        aptroot = work / "apt"
        opts = isolated_config(aptroot, [pk])
        import json

        apt_args = [f"-o{k}={v}" for k, v in opts.items()]
        # builds apt's own binary cache once, so apt is measured warm as well
        subprocess.run(["apt-get", *apt_args, "-qq", "check"], check=True, stdout=subprocess.DEVNULL)
        print(f"metadata: bookworm main amd64 Packages, {pk.stat().st_size / 1e6:.1f} MB uncompressed")
        print(f"{'list':45} {'pkgs':>5} {'cold':>7} {'warm':>7} {'apt':>7} {'apt-get -s':>10}  "
              f"{'warm/apt':>8} {'apt-get/warm':>12}")
        for names in LISTS:
            recipe = recipe_for(names, work)
            out = work / "out.lock"
            colds, warms, apts, simulates = [], [], [], []
            for _ in range(args.repeat):
                shutil.rmtree(cache / "solv", ignore_errors=True)
                colds.append(timed([*CLI, "lock", str(recipe), "-o", str(out), "--cache", str(cache),
                                    "--offline", "-q"]))
            for _ in range(args.repeat):
                warms.append(timed([*CLI, "lock", str(recipe), "-o", str(out), "--cache", str(cache),
                                    "--offline", "-q"]))
            npk = len(read_lock(out).packages)
            for _ in range(args.repeat):
                res = subprocess.run(["/usr/bin/python3", "-c", APT_TIMER, json.dumps(opts), *names],
                                     check=True, capture_output=True, text=True)
                secs, napt = res.stdout.split()
                apts.append(float(secs))
            for _ in range(max(1, args.repeat // 2)):
                simulates.append(timed(["apt-get", *apt_args, "-qq", "--simulate", "install", *names]))
            c, w, a, s = (statistics.median(x) for x in (colds, warms, apts, simulates))
            print(f"{' '.join(names):45} {npk:5d} {c:7.3f} {w:7.3f} {a:7.3f} {s:10.3f}  "
                  f"{a / w:7.2f}x {s / w:11.1f}x   (apt marked {napt})")
        print("\ntimes in seconds (median); cold/warm are whole `cernvm-build lock` processes;"
              " warm/apt > 1 means the whole lock process beats apt's resolution alone")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
