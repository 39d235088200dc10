"""libFuzzer on cvmfs-mini's parsers (HTTP responses, signed letters, catalog rows/xattrs/chunks, paths,
the --proxy list and its failover rotation).

Each harness in cernvm_build/boot/client/fuzz/ includes cvmfs-mini.c (without main()) and is built with
clang's -fsanitize=fuzzer,address,undefined; it runs for FUZZ_SECONDS from the seeds kept in the
repository (copied: the repository's corpus is not changed). Any crash, sanitizer report, leak,
timeout or exit (a parser that calls die()) fails the test with the fuzzer's report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cernvm_build.boot.client import PKG_CONFIG_PACKAGES, SOURCE

FUZZ_DIR = SOURCE.parent / "fuzz"
TARGETS = ("http", "letters", "catalog", "path", "proxy")
FUZZ_SECONDS = int(os.environ.get("CVMFS_MINI_FUZZ_SECONDS", "20"))
FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-Wall", "-Wextra",
         "-Wno-unused-function"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed (tools/setup.sh)")]


def _build(target: str, out: Path) -> Path:
    libs = subprocess.run(["pkg-config", "--cflags", "--libs", *PKG_CONFIG_PACKAGES], capture_output=True,
                          text=True, check=True).stdout.split()
    exe = out / f"fuzz_{target}"
    proc = subprocess.run(["clang", *FLAGS, "-o", str(exe), str(FUZZ_DIR / f"fuzz_{target}.c"), *libs],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"building fuzz_{target}:\n{proc.stderr}"
    return exe


def _run(target: str, exe: Path, work: Path) -> tuple[str, int, int, str]:
    corpus = work / f"corpus-{target}"
    corpus.mkdir()
    seeds = FUZZ_DIR / "corpus" / target
    proc = subprocess.run([str(exe), f"-max_total_time={FUZZ_SECONDS}", "-print_final_stats=1", "-timeout=10",
                           "-rss_limit_mb=1024", f"-artifact_prefix={work}/{target}-", str(corpus),
                           str(seeds)],
                          capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    return target, proc.returncode, int(m.group(1)) if m else 0, proc.stderr


def test_fuzz_every_parser(tmp_path):
    seeds = {t: sorted(p.name for p in (FUZZ_DIR / "corpus" / t).iterdir()) for t in TARGETS}
    assert all(seeds.values()), seeds
    with ThreadPoolExecutor(max_workers=2) as pool:  # 2 cores: two fuzzers at a time
        exes = dict(zip(TARGETS, pool.map(lambda t: _build(t, tmp_path), TARGETS)))
        results = list(pool.map(lambda t: _run(t, exes[t], tmp_path), TARGETS))
    total = sum(r[2] for r in results)
    for target, rc, execs, _ in results:
        print(f"fuzz_{target}: {execs} executions in {FUZZ_SECONDS} s, exit {rc}")
    print(f"total: {total} executions")
    failed = [(t, err) for t, rc, _, err in results if rc != 0]
    assert not failed, "\n\n".join(f"fuzz_{t} failed:\n{err[-4000:]}" for t, err in failed)
    assert all(r[2] > 1000 for r in results), [(r[0], r[2]) for r in results]
