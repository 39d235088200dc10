#!/usr/bin/env python3
"""Benchmark: `cernvm-build lock` (whole process, cold and warm) next to apt on the same metadata.

Run alone: .venv/bin/python tests/benchmarks/bench_lock.py [--repeat N] [--baseline GITREF]
Needs the live Debian archive (bookworm main amd64). Runs this checkout's code (PYTHONPATH), never
an installed copy, and prints times, ratios, closure sizes and where the time goes:
  cold    - empty .solv/side-table cache (the Packages file itself already downloaded): metadata parse
  warm    - everything cached (--offline: the signature is still checked, its gpgv result sealed);
            each run re-locks into the same file, which write_lock leaves as it is when the lock's
            bytes have not changed (a lock written to a new file also pays its fsync and rename)
  apt     - python-apt in a fresh process: open the (warm) cache over an empty dpkg status + mark the
            list (the resolution alone, timed inside the process: start-up and imports excluded;
            its CPU time likewise)
  apt-get - `apt-get install --simulate` whole process in an isolated configuration
Variants of the warm lock, all measured interleaved in the same run (the machine is shared, so only
ratios measured side by side mean much):
  launcher - bin/cernvm-build, the installed command (`lock` starts Python without running the code
             of .pth files; see that script)
  python   - `python -m cernvm_build.cli`: the same code with the full start-up of site.py
  before   - with --baseline GITREF: that revision's cernvm_build (git archive), through `python -m`,
             as its console script ran it; its locks must be byte-identical to this checkout's.
Profile: phases from CERNVM_BUILD_TIMINGS (cernvm_build/util/timing.py) for this checkout; for the
baseline, the same phases timed by wrapping its functions (tests/benchmarks/lock_phases.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cernvm_build.lock.lockfile import read_lock  # noqa: E402
from cernvm_build.util.content_store import ContentStore  # noqa: E402
from tests.support.aptref import isolated_config  # noqa: E402

LISTS = [["bash", "coreutils"], ["build-essential", "python3"], ["gnome-core", "build-essential", "python3"]]
VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
PHASES_HARNESS = Path(__file__).with_name("lock_phases.py")

APT_TIMER = r'''
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
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
print(time.perf_counter() - t0, n, time.process_time() - c0)
'''


class Variant:
    """One way of running `cernvm-build lock`: a command prefix and the code it runs."""

    def __init__(self, name: str, prefix: list[str], code: Path, marks: bool):
        self.name, self.prefix, self.code, self.marks = name, prefix, code, marks
        self.cpu: list[float] = []

    def env(self, t0: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CERNVM_BUILD_TIMINGS")}
        env.update(PYTHONPATH=str(self.code), CERNVM_BUILD_PYTHON=PY)
        if t0 is not None:
            env["CERNVM_BUILD_TIMINGS"] = f"t0={t0}"
        return env

    def run(self, args: list[str]) -> tuple[float, dict[str, float]]:
        """Wall time of one whole process, and its phases (ms) when it reports them; its CPU time
        (user + system, seconds) is added to self.cpu."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic_ns()
        proc = subprocess.run([*self.prefix, "lock", *args], env=self.env(t0), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wall = (time.monotonic_ns() - t0) / 1e9
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{self.name}: lock failed:\n{proc.stderr}")
        phases: dict[str, float] = {}
        for line in proc.stderr.splitlines():
            if line.startswith("timing "):
                name, ms = line[len("timing "):].rsplit(" ", 1)
                phases[name] = phases.get(name, 0.0) + float(ms)
        if phases:
            phases["exit (teardown)"] = max(0.0, wall * 1e3 - sum(phases.values()))
        return wall, phases


def byte_compile(code: Path) -> None:
    # as an installed package would have: byte-compiled modules (this sandbox sets
    # PYTHONDONTWRITEBYTECODE, which otherwise makes every run recompile everything)
    subprocess.run([PY, "-m", "compileall", "-q", str(code / "cernvm_build")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                   stdout=subprocess.DEVNULL)


def baseline_code(ref: str, dest: Path) -> Path:
    """REF's cernvm_build, extracted (never checked out over this worktree)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "cernvm_build"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


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


def start_up(repeat: int) -> dict[str, float]:
    """The interpreter alone: with site.py (what every console script pays) and without (-S)."""
    out = {}
    for label, flags in (("python -c pass", []), ("python -S -c pass", ["-S"]), ("python -I -S -c pass", ["-I", "-S"])):
        out[label] = statistics.median(timed([PY, *flags, "-c", "pass"]) for _ in range(repeat))
    return out


def print_profile(title: str, samples: dict[str, list[dict[str, float]]]) -> None:
    """Median milliseconds per phase, one column per variant."""
    names = list(samples)
    order: list[str] = []
    for runs in samples.values():
        for run in runs:
            order += [p for p in run if p not in order]
    print(f"\n{title}\n{'phase (median ms)':44}" + "".join(f"{n:>12}" for n in names))
    for phase in order:
        cells = []
        for n in names:
            vals = [run[phase] for run in samples[n] if phase in run]
            cells.append(f"{statistics.median(vals):12.1f}" if vals else f"{'-':>12}")
        print(f"{phase:44}" + "".join(cells))
    totals = [f"{statistics.median(sum(r.values()) for r in samples[n]):12.1f}" if samples[n] else f"{'-':>12}"
              for n in names]
    print(f"{'total':44}" + "".join(totals))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9, help="warm runs per variant and list (medians)")
    ap.add_argument("--cold", type=int, default=3, help="cold runs per list")
    ap.add_argument("--baseline", metavar="GITREF", help="also time this revision's code (e.g. main)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cvb-bench-lock-"))
    cache = work / "cache"
    launcher = Variant("launcher", [str(ROOT / "bin" / "cernvm-build")], ROOT, marks=True)
    plain = Variant("python", [PY, "-m", "cernvm_build.cli"], ROOT, marks=True)
    variants = [launcher, plain]
    try:
        byte_compile(ROOT)
        if args.baseline:
            code = baseline_code(args.baseline, work / "baseline")
            byte_compile(code)
            variants.append(Variant("before", [PY, str(PHASES_HARNESS)], code, marks=False))
        # download once (not measured): the first lock fills the blob cache
        first = recipe_for(LISTS[0], work)
        subprocess.run([*launcher.prefix, "lock", str(first), "-o", str(work / "warmup.lock"), "--cache",
                        str(cache)], check=True, env=launcher.env())
        pk = ContentStore(cache).blob(read_lock(work / "warmup.lock").repositories[0].indexes[0].sha256)
        aptroot = work / "apt"
        opts = isolated_config(aptroot, [pk])
        apt_args = [f"-o{k}={v}" for k, v in opts.items()]
        # builds apt's own binary cache once, so apt is measured warm as well
        subprocess.run(["apt-get", *apt_args, "-qq", "check"], check=True, stdout=subprocess.DEVNULL)
        print(f"metadata: bookworm main amd64 Packages, {pk.stat().st_size / 1e6:.1f} MB uncompressed; "
              f"load average {os.getloadavg()[0]:.2f}")
        for label, secs in start_up(args.repeat).items():
            print(f"  interpreter start-up, {label:22} {secs * 1e3:6.1f} ms")
        head = f"{'list':36} {'pkgs':>5} {'cold':>7} " + "".join(f"{v.name:>9}" for v in variants)
        print(f"\n{head} {'apt':>7} {'apt-get -s':>10}  " + "".join(f"{'apt/' + v.name:>16}" for v in variants))
        profiles: dict[str, dict[str, list[dict[str, float]]]] = {}
        cpus: dict[str, str] = {}
        for names in LISTS:
            recipe = recipe_for(names, work)
            outs = {v.name: work / f"{v.name}.lock" for v in variants}
            lock_args = {v.name: [str(recipe), "-o", str(outs[v.name]), "--cache", str(cache), "--offline", "-q"]
                         for v in variants}
            cold_variants = [v for v in variants if v.name in ("launcher", "before")]
            colds: dict[str, list[float]] = defaultdict(list)
            for _ in range(args.cold):
                for v in cold_variants:
                    shutil.rmtree(cache / "solv", ignore_errors=True)
                    colds[v.name].append(v.run(lock_args[v.name])[0])
            for v in variants:          # warm-up (and the locks to compare)
                v.run(lock_args[v.name])
            texts = {n: p.read_bytes() for n, p in outs.items()}
            if len(set(texts.values())) != 1:
                raise SystemExit(f"{' '.join(names)}: the variants wrote different locks: {sorted(texts)}")
            warms: dict[str, list[float]] = defaultdict(list)
            phases: dict[str, list[dict[str, float]]] = defaultdict(list)
            apts, apt_cpus, simulates = [], [], []
            for v in variants:
                v.cpu.clear()
            for i in range(args.repeat):     # interleaved: every variant sees the same load
                for v in variants:
                    wall, ph = v.run(lock_args[v.name])
                    warms[v.name].append(wall)
                    phases[v.name].append(ph)
                res = subprocess.run(["/usr/bin/python3", "-c", APT_TIMER, json.dumps(opts), *names],
                                     check=True, capture_output=True, text=True)
                secs, napt, cpu = res.stdout.split()
                apts.append(float(secs))
                apt_cpus.append(float(cpu))
                if i < max(1, args.repeat // 3):
                    simulates.append(timed(["apt-get", *apt_args, "-qq", "--simulate", "install", *names]))
            npk = len(read_lock(outs["launcher"]).packages)
            a, s = statistics.median(apts), statistics.median(simulates)
            c = statistics.median(colds["launcher"])
            cold_before = f"   (cold before {statistics.median(colds['before']):.3f})" if colds["before"] else ""
            w = {v.name: statistics.median(warms[v.name]) for v in variants}
            print(f"{' '.join(names):36} {npk:5d} {c:7.3f} " + "".join(f"{w[v.name]:9.3f}" for v in variants)
                  + f" {a:7.3f} {s:10.3f}  " + "".join(f"{a / w[v.name]:15.2f}x" for v in variants)
                  + f"   (apt marked {napt}){cold_before}")
            ac = statistics.median(apt_cpus)
            cpus[" ".join(names)] = f"{' '.join(names):36} " + "".join(
                f"{statistics.median(v.cpu) * 1e3:9.1f}" for v in variants) + f" {ac * 1e3:7.1f}  " + "".join(
                f"{ac / statistics.median(v.cpu):15.2f}x" for v in variants)
            profiles[" ".join(names)] = phases
        print("\ntimes in seconds (median); cold and the variants are whole `cernvm-build lock` processes;"
              " apt/X > 1 means the whole lock process beats apt's resolution alone")
        print(f"\nCPU time, user + system (median ms; less sensitive to a shared machine's load than wall time)\n"
              f"{'list':36} " + "".join(f"{v.name:>9}" for v in variants) + f" {'apt':>7}  "
              + "".join(f"{'apt/' + v.name:>16}" for v in variants))
        for line in cpus.values():
            print(line)
        for title, phases in profiles.items():
            print_profile(f"where the time goes (warm): {title}", phases)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
