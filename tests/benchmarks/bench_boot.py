#!/usr/bin/env python3
"""Benchmark: the boot ISO — its size, time to a marker on the serial console, and how much of the
snapshot a boot actually fetches over HTTP ("on demand", measured at the server).

Run alone (not collected as a timed test; needs root, qemu, network or a package cache):
    .venv/bin/python tests/benchmarks/bench_boot.py [--workdir DIR] [--skip-full] [--accel tcg|kvm]

Scenarios: (1) a tiny busybox snapshot to its init's marker; (2) the bookworm minimal lock built with
`rootfs --mode install`, booted by systemd to the serial login prompt, cold (tmpfs cache) and then
twice with an ext4 scratch disk (first boot fills the disk cache, second boot runs from it).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boot_helpers import (  # noqa: E402
    BOOT_LOCK,
    MARKER,
    CountingServer,
    build_minimal_snapshot,
    fetch_options,
    make_boot_tree,
    repo_bytes,
)

from cernvm_build.boot.iso import IsoOptions, build_iso  # noqa: E402
from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot  # noqa: E402
from cernvm_build.cvmfs.keys import create_keys  # noqa: E402
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish  # noqa: E402


def tree_bytes(tree: Path) -> int:
    return sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def iso_for(work: Path, server: CountingServer, pubkey: Path, tag: str, name: str) -> tuple[Path, float, object]:
    t = time.monotonic()
    r = build_iso(work / name, IsoOptions(boot_lock=BOOT_LOCK, repo_url=f"http://{HOST_FROM_GUEST}:{server.port}",
                                          pubkeys=[pubkey], tag=tag, fetch=fetch_options()))
    return r.path, time.monotonic() - t, r


def row(name: str, run, server: CountingServer, total: int, tree: int) -> str:
    at = f"{run.marker_seconds:7.1f} s" if run.marker_seconds is not None else "  (none)"
    return (f"  {name:<34} marker {at}   fetched {server.bytes / 1e6:7.2f} MB in {server.requests:4d} requests"
            f" = {100 * server.bytes / total:5.1f} % of the repository ({total / 1e6:.1f} MB),"
            f" {100 * server.bytes / tree:5.1f} % of the tree ({tree / 1e6:.1f} MB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, help="keep trees, repositories and ISOs here (reused if present)")
    ap.add_argument("--skip-full", action="store_true", help="only the tiny snapshot")
    ap.add_argument("--accel", default=os.environ.get("CERNVM_BUILD_QEMU_ACCEL", "tcg"))
    args = ap.parse_args()
    os.environ["CERNVM_BUILD_QEMU_ACCEL"] = args.accel
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-boot-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; qemu accel {args.accel}, 2 vCPUs, 1 GiB")

    # (1) tiny snapshot
    small = work / "small"
    if small.exists():
        shutil.rmtree(small)
    small.mkdir()
    keys = small / "keys"
    create_keys(keys, "boot.example.org", 1_700_000_000)
    init_repository(small / "repo", "boot.example.org", keys)
    tree = make_boot_tree(small / "tree")
    lock = small / "closure.lock.toml"
    lock.write_text('lock-version = 1\nname = "bench"\n')
    publish(tree, small / "repo", keys, PublishOptions(tag="v1", lock_file=lock, durable=False))
    server = CountingServer(small / "repo")
    iso, build_s, r = iso_for(small, server, keys / "boot.example.org.pub", "v1", "boot.iso")
    print(f"ISO: {r.size / 2**20:.2f} MiB (kernel {r.kernel_size / 2**20:.2f} MiB, initramfs "
          f"{r.initramfs_size / 2**20:.2f} MiB), built in {build_s:.1f} s")
    run = boot(QemuOptions(iso=iso), small / "serial.log", 300, MARKER)
    print(row("tiny snapshot, init marker", run, server, repo_bytes(small / "repo"), tree_bytes(tree)))
    server.shutdown()
    if args.skip_full:
        return 0

    # (2) bookworm minimal with systemd
    full = work / "full"
    if not (full / "repo" / ".cvmfspublished").exists():
        shutil.rmtree(full, ignore_errors=True)
        full.mkdir()
        _, _, pub, stages = build_minimal_snapshot(full)
        print("snapshot: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
              + f"; {pub.files} files")
    total, tree_total = repo_bytes(full / "repo"), tree_bytes(full / "tree")
    server = CountingServer(full / "repo")
    iso, _, _ = iso_for(full, server, full / "keys" / "os.example.org.pub", "bookworm-minimal", "boot.iso")
    run = boot(QemuOptions(iso=iso), full / "serial-cold.log", 900, "login:", stop_at_marker=True)
    print(row("bookworm minimal, cold (tmpfs)", run, server, total, tree_total))
    disk = full / "scratch.img"
    with open(disk, "wb") as f:
        f.truncate(0)
        f.truncate(1 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "CVMSCRATCH", str(disk)], check=True)
    for label in ("scratch disk, first boot", "scratch disk, second boot"):
        server.reset()
        # a clean shutdown after the prompt, so the disk cache is written back as on a real machine
        run = boot(QemuOptions(iso=iso, disk=disk), full / "serial-disk.log", 900, "login:", powerdown_at_marker=True)
        print(row(f"bookworm minimal, {label}", run, server, total, tree_total))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
