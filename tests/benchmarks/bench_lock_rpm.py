"""Benchmark: `cernvm-build lock` against dnf's resolution on the rpm-md fixture repository.

Run alone (not a timed test):  .venv/bin/python tests/benchmarks/bench_lock_rpm.py [--synthetic N] [--runs R]

Compares, on the same repository and package list:
  * `cernvm-build lock` as a whole process, cold cache (fresh cache directory) and warm cache;
  * dnf (the library, in a subprocess under /usr/bin/python3, i.e. `dnf install --assumeno` without
    the CLI's rpmdb/plugin start-up) with a fresh cache directory and with a warm one; reported both
    as the whole process and as dnf's own fill_sack + resolve time.
The fixture is tiny (17 packages); --synthetic N adds N generated packages (rpmbuild time grows
with N: about 17 s for 1000 on two cores) so the figures show metadata parsing, not only start-up.
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

from tests.support.dnfref import DnfCase, dnf_resolutions  # noqa: E402
from tests.support.rpmrepo import build_fixture, synthetic_packages  # noqa: E402

CLI = [str(ROOT / ".venv/bin/python"), "-m", "cernvm_build.cli"]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr}")
    return elapsed


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:8.1f} ms   min {min(xs) * 1000:8.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=0, help="extra generated packages (default 0)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cvb-bench-rpm-"))
    # Both sides get byte-compiled modules (an environment with PYTHONDONTWRITEBYTECODE=1 would make
    # every run of ours re-compile its sources while dnf's system modules have Debian's .pyc files);
    # the prefix keeps the .pyc files out of the source tree. The first, unmeasured runs warm it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    try:
        t = time.perf_counter()
        extra = synthetic_packages(args.synthetic)
        fixture = build_fixture(work / "fixture", extra)
        print(f"fixture: {len(fixture.rpms)} packages built and signed in {time.perf_counter() - t:.2f} s")
        names = ["app", "mailer", "toolbox"] + ([extra[-1].name] if extra else [])
        recipe = fixture.recipe(work / "bench.toml", names, weak=True)
        print(f"request: {' '.join(names)} (weak deps on)\n")

        cold, warm = [], []
        warm_cache = work / "warm-cache"
        timed(CLI + ["lock", str(recipe), "-o", str(work / "w.lock"), "--cache", str(warm_cache)])
        for i in range(args.runs):
            cache = work / f"cold-cache-{i}"
            cold.append(timed(CLI + ["lock", str(recipe), "-o", str(work / "c.lock"), "--cache", str(cache)]))
            shutil.rmtree(cache)
            warm.append(timed(CLI + ["lock", str(recipe), "-o", str(work / "w.lock"), "--cache", str(warm_cache)]))
        n = sum(1 for line in (work / "w.lock").read_text().splitlines() if line == "[[package]]")

        case = DnfCase(tuple(names), weak=True)
        dnf_cold, dnf_warm, dnf_cold_in, dnf_warm_in = [], [], [], []
        dnf_cache = work / "dnf-warm-cache"
        first = dnf_resolutions(fixture.url, [case], cachedir=dnf_cache)[0]
        if first.error:
            raise SystemExit(f"dnf failed: {first.error}")
        for _ in range(args.runs):
            t = time.perf_counter()
            r = dnf_resolutions(fixture.url, [case])[0]                  # fresh cache directory
            dnf_cold.append(time.perf_counter() - t)
            dnf_cold_in.append(r.seconds_load + r.seconds_resolve)
            t = time.perf_counter()
            r = dnf_resolutions(fixture.url, [case], cachedir=dnf_cache)[0]
            dnf_warm.append(time.perf_counter() - t)
            dnf_warm_in.append(r.seconds_load + r.seconds_resolve)
        same = "same" if r.nevras == {line for line in _nevras(work / "w.lock")} else "DIFFERENT"

        print(f"closure: {n} packages ({same} NEVRA set as dnf)\n")
        print(f"cernvm-build lock, whole process, cold cache   {summary(cold)}")
        print(f"cernvm-build lock, whole process, warm cache   {summary(warm)}")
        print(f"dnf library, whole process, fresh cache        {summary(dnf_cold)}")
        print(f"dnf library, whole process, warm cache         {summary(dnf_warm)}")
        print(f"dnf fill_sack+resolve only, fresh cache        {summary(dnf_cold_in)}")
        print(f"dnf fill_sack+resolve only, warm cache         {summary(dnf_warm_in)}")
        med = statistics.median
        print(f"\nratios (median): cold lock / dnf fresh process = {med(cold) / med(dnf_cold):.2f}; "
              f"warm lock / dnf warm process = {med(warm) / med(dnf_warm):.2f}; "
              f"warm lock / cold lock = {med(warm) / med(cold):.2f}")
        fixture.gpg.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _nevras(lock: Path) -> set[str]:
    from cernvm_build.lock.lockfile import read_lock

    return {f"{p.name}-{p.evr}.{p.arch}" for p in read_lock(lock).packages}


if __name__ == "__main__":
    main()
