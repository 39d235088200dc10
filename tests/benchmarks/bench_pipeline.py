"""Benchmark: the main pipeline (pipeline/debian-bookworm.toml) and what it produces, against a classic
disk image of the same closure.

Run alone (root: install mode; network unless the cache is warm):
    .venv/bin/python tests/benchmarks/bench_pipeline.py [--pipeline P.toml] [--work DIR] [--cache DIR]
                                                        [--no-respawn]

Prints per-stage times of a first run and of a second (no-op) run, then the sizes a user compares:
the closure download, the root tree, the CernVM-FS objects the snapshot added (what a stratum-1 or a
cache holds), the boot ISO (when the boot stage is in the build), and the same tree as an ext4 image,
raw (apparent and allocated) and qcow2 (compressed). Finally, a respawn from a preservation bundle
in a process without network (`unshare -n`), checked to give the same root hash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from cernvm_build.image.ext4 import ImageOptions, make_image  # noqa: E402

CLI = [str(Path(sys.executable).with_name("cernvm-build"))]


def du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def build(args: list[str], prefix: list[str] = ()) -> tuple[dict, float]:
    t = time.monotonic()
    r = subprocess.run([*prefix, *CLI, "build", *args, "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - t
    if r.returncode:
        sys.exit(f"build failed: {r.stderr.strip()}")
    return json.loads(r.stdout), elapsed


def stages_line(result: dict) -> str:
    return ", ".join(f"{s['name']} {s['seconds']:.1f}s" if s["status"] == "ran" else f"{s['name']} {s['status']}"
                     for s in result["stages"])


def mb(n: float) -> str:
    return f"{n / 1e6:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=str(ROOT / "pipeline" / "debian-bookworm.toml"))
    ap.add_argument("--work", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--cache", help="package/metadata cache (default: the user cache, so a warm run skips downloads)")
    ap.add_argument("--no-respawn", action="store_true", help="skip the offline respawn from a bundle")
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--state-dir", str(work / "state"), "--lock-file", str(work / "closure.lock.toml")]
    if a.cache:
        common += ["--cache", a.cache]
    try:
        first, t_first = build([a.pipeline, *common])
        second, t_second = build([a.pipeline, *common])
        v = first["values"]
        print(f"pipeline {Path(a.pipeline).name}: {v['packages']} packages, lock {v['lock_digest']}")
        print(f"  first run   {t_first:6.1f} s   ({stages_line(first)})")
        print(f"  second run  {t_second:6.1f} s   ({stages_line(second)})")
        assert second["values"]["root_hash"] == v["root_hash"]

        tree = Path(v["tree"])
        repo = Path(v["repository"])
        t = time.monotonic()
        raw = make_image(tree, work / "image.raw", ImageOptions(format="raw", sde=v["sde"]))
        t_raw = time.monotonic() - t
        t = time.monotonic()
        qcow = make_image(tree, work / "image.qcow2", ImageOptions(format="qcow2", sde=v["sde"]))
        t_qcow = time.monotonic() - t

        print("sizes")
        print(f"  closure download (.debs)           {mb(v['download_bytes'])}")
        print(f"  root tree (regular files)          {mb(v['tree_bytes'])}   {v['tree_files']} files")
        print(f"  CernVM-FS objects of the snapshot  {mb(v['bytes_written'])}   {v['objects_written']} objects "
              f"(repository data/ {mb(du(repo / 'data')).strip()})")
        if "iso" in v:
            print(f"  boot ISO                           {mb(v['iso_bytes'])}   {v['iso']}")
            print(f"  ISO + CernVM-FS objects            {mb(v['iso_bytes'] + v['bytes_written'])}")
        else:
            iso = next(s for s in first["stages"] if s["name"] == "iso")
            print(f"  boot ISO                           n/a ({iso['reason']})")
        print(f"  ext4 image, raw (apparent)         {mb(raw.bytes)}   made in {t_raw:.1f} s")
        print(f"  ext4 image, raw (allocated)        {mb(raw.allocated_bytes)}")
        print(f"  ext4 image, qcow2 -c               {mb(qcow.bytes)}   made in {t_qcow:.1f} s")

        if not a.no_respawn:
            if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
                print("respawn: skipped (unshare -n not permitted)")
                return
            t = time.monotonic()
            r = subprocess.run([*CLI, "bundle", v["lock_file"], str(work / "bundle"), "-q"]
                               + (["--cache", a.cache] if a.cache else []), capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"bundle failed: {r.stderr.strip()}")
            t_bundle = time.monotonic() - t
            pub = work / "state" / "signing" / "lock.pub"
            respawn, t_respawn = build(["--from-bundle", str(work / "bundle"), a.pipeline, "--state-dir",
                                        str(work / "respawn"), "--cache", str(work / "respawn-cache")]
                                       + (["--verify-key", str(pub)] if pub.exists() else []),
                                       prefix=["unshare", "-n"])
            same = respawn["values"]["root_hash"] == v["root_hash"]
            print(f"respawn: bundle {mb(du(work / 'bundle')).strip()} made in {t_bundle:.1f} s; rebuilt offline in "
                  f"{t_respawn:.1f} s ({stages_line(respawn)}); root hash "
                  f"{'identical' if same else 'DIFFERENT'}: {respawn['values']['root_hash']}")
            if not same:
                sys.exit(1)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
