#!/usr/bin/env python3
"""Benchmark: the boot ISO — its size, time to a marker on the serial console, and how much of the
snapshot a boot actually fetches over HTTP ("on demand", measured at the server).

Run alone (not collected as a timed test; needs root, qemu, network or a package cache):
    .venv/bin/python tests/benchmarks/bench_boot.py [--workdir DIR] [--skip-full] [--accel tcg|kvm]

Scenarios: (1) a tiny busybox snapshot to its init's marker; (2) the bookworm minimal lock built with
`rootfs --mode install`, booted by systemd to the serial login prompt, cold (tmpfs cache) and then
twice with an ext4 scratch disk (first boot fills the disk cache, second boot runs from it).

(2) is measured side by side with the same tree on a local disk: an ext4 image of the tree
(`cernvm_build.image`, raw) on a virtio disk, booted with the same kernel through qemu -kernel/-initrd
and the distribution's own initramfs (the tree's /boot/initrd.img-*, made by initramfs-tools when the
tree was installed), root=/dev/vda, the ISO's console arguments. Three kinds of boot alternate in each
of --rounds rounds, so load from other jobs on the machine hits all of them alike:
  iso     the ISO as shipped (-cdrom: firmware, isolinux, its 3 s menu, the kernel read from the CD)
  direct  the ISO's kernel and initramfs through -kernel/-initrd (no firmware menu: like the disk)
  disk    the local disk
Printed: each boot's seconds to "login:", medians, the ratios iso/disk and direct/disk, and the bytes
and requests each network boot fetched (CountingServer).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
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

from cernvm_build.boot.iso import CONSOLE_ARGS, IsoOptions, build_iso  # noqa: E402
from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot, extract_from_iso  # noqa: E402
from cernvm_build.cvmfs.keys import create_keys  # noqa: E402
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish  # noqa: E402
from cernvm_build.image.ext4 import ImageOptions, make_image  # noqa: E402


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


def local_disk(full: Path) -> tuple[Path, Path, Path]:
    """The tree as a raw ext4 image (made once), with the tree's own kernel and initramfs-tools initrd."""
    tree = full / "tree"
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        sys.exit(f"{tree}/boot has no vmlinuz-*/initrd.img-* (the lock's kernel, installed by initramfs-tools)")
    image = full / "rootfs.ext4"
    if not image.exists():
        t = time.monotonic()
        res = make_image(tree, image, ImageOptions(format="raw"))
        print(f"local disk: {image} ({res.virtual_bytes / 2**20:.0f} MiB ext4) made in {time.monotonic() - t:.1f} s")
    return image, kernels[-1], initrds[-1]


KINDS = {"iso": "ISO (-cdrom, isolinux menu 3 s)", "direct": "ISO kernel+initramfs (-kernel)",
         "direct0": "same, cvmfs.prefetch=0 (no prefetch)", "disk": "local virtio disk (-kernel, own initrd)"}
ROOT_RE = re.compile(r"\(root catalog ([0-9a-f]{40})\)")


def record_prefetch_list(full: Path, repo: Path, kernel: Path, initrd: Path, cmdline: str) -> Path:
    """Boot once with prefetch off against a server that records the requests in order; publish them
    as the snapshot's prefetch list (.cvmfsprefetch-<root hash>). Kept while the root hash stays."""
    from http.server import ThreadingHTTPServer
    import threading

    from cernvm_build.cvmfs import prefetch, serve

    lists = sorted(repo.glob(prefetch.PREFIX + "*"))
    if lists:
        return lists[0]
    paths: list[str] = []

    class Recording(serve.Handler):
        def send_file(self, src) -> None:
            paths.append(self.path)
            super().send_file(src)

    server = ThreadingHTTPServer(("127.0.0.1", 0), serve.handler_for(repo, Recording))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{HOST_FROM_GUEST}:{server.server_address[1]}"
        run = boot(QemuOptions(kernel=kernel, initrd=initrd, append=f"{cmdline} cvmfs.url={url} cvmfs.prefetch=0"),
                   full / "serial-record.log", 900, "login:", stop_at_marker=True)
    finally:
        server.shutdown()
        server.server_close()
    m = ROOT_RE.search(run.console)
    if run.marker_seconds is None or not m:
        sys.exit(f"the recording boot reached no login prompt:\n{run.tail()}")
    names = prefetch.names_from_requests(paths)
    out = prefetch.write_list(repo, m.group(1), names)
    print(f"prefetch list recorded: {out.name}, {len(names)} objects ({out.stat().st_size} bytes)")
    return out


def side_by_side(full: Path, iso: Path, cmdline: str, server: CountingServer, rounds: int, total: int,
                 kinds: tuple[str, ...] = ("iso", "direct", "disk"), prefetch_list: bool = True) -> dict[str, list[float]]:
    """Alternate the kinds of boot for ROUNDS rounds; print each boot and the medians and ratios."""
    image, dkernel, dinitrd = local_disk(full)
    ikernel = extract_from_iso(iso, "/boot/vmlinuz", full / "iso-vmlinuz")
    iinitrd = extract_from_iso(iso, "/boot/initrd.img", full / "iso-initrd.img")
    same = ikernel.read_bytes() == dkernel.read_bytes()
    print(f"kernel: ISO's {'==' if same else '!='} tree's {dkernel.name}; initramfs: ISO "
          f"{iinitrd.stat().st_size / 2**20:.1f} MiB, tree's {dinitrd.name} {dinitrd.stat().st_size / 2**20:.1f} MiB")
    if prefetch_list:
        record_prefetch_list(full, full / "repo", ikernel, iinitrd, cmdline)
    opts = {"iso": QemuOptions(iso=iso),
            "direct": QemuOptions(kernel=ikernel, initrd=iinitrd, append=cmdline),
            "direct0": QemuOptions(kernel=ikernel, initrd=iinitrd, append=f"{cmdline} cvmfs.prefetch=0"),
            # snapshot=on: every boot sees the same pristine image (no journal replay, no first-boot changes)
            "disk": QemuOptions(kernel=dkernel, initrd=dinitrd, append=f"{CONSOLE_ARGS} root=/dev/vda rw",
                                extra=["-drive", f"file={image},format=raw,if=virtio,snapshot=on"])}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    fetched: list[tuple[int, int]] = []
    for n in range(rounds):
        for kind in kinds:
            server.reset()
            run = boot(opts[kind], full / f"serial-{kind}-{n}.log", 900, "login:", stop_at_marker=True)
            if run.marker_seconds is None:
                sys.exit(f"{kind} boot {n}: no login prompt\n{run.tail()}")
            times[kind].append(run.marker_seconds)
            extra = ""
            if kind not in ("disk", "direct0"):
                fetched.append((server.bytes, server.requests))
                extra = f"   fetched {server.bytes / 1e6:6.2f} MB in {server.requests} requests"
            print(f"  round {n + 1} {KINDS[kind]:<40} login: {run.marker_seconds:6.1f} s{extra}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    print(f"bookworm minimal to the serial login prompt, {rounds} alternating rounds, medians"
          f" (load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
    for k in kinds:
        print(f"  {KINDS[k]:<40} {med[k]:6.1f} s   ({' / '.join(f'{t:.1f}' for t in times[k])})")
    if "disk" in med:
        for k in kinds:
            if k != "disk":
                print(f"  ratio {k}/disk {med[k] / med['disk']:.2f}x")
    if fetched:
        b = statistics.median(f[0] for f in fetched)
        q = statistics.median(f[1] for f in fetched)
        print(f"  fetched per network boot (median): {b / 1e6:.2f} MB in {q:.0f} requests"
              f" = {100 * b / total:.1f} % of the repository")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, help="keep trees, repositories and ISOs here (reused if present)")
    ap.add_argument("--skip-full", action="store_true", help="only the tiny snapshot")
    ap.add_argument("--skip-small", action="store_true", help="no tiny snapshot, only the bookworm one")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of iso / direct / disk boots (default 3)")
    ap.add_argument("--kinds", default="iso,direct,direct0,disk", help="which boots each round makes")
    ap.add_argument("--no-prefetch-list", action="store_true",
                    help="do not record and publish the snapshot's boot working set (.cvmfsprefetch-<root hash>)")
    ap.add_argument("--skip-scratch", action="store_true", help="no scratch-disk boots after the rounds")
    ap.add_argument("--accel", default=os.environ.get("CERNVM_BUILD_QEMU_ACCEL", "tcg"))
    args = ap.parse_args()
    os.environ["CERNVM_BUILD_QEMU_ACCEL"] = args.accel
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-boot-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; qemu accel {args.accel}, 2 vCPUs, 1 GiB")

    # (1) tiny snapshot
    if not args.skip_small:
        small_snapshot(work)
    if args.skip_full:
        return 0
    return full_snapshot(work, args)


def small_snapshot(work: Path) -> None:
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


def full_snapshot(work: Path, args) -> int:
    """(2) bookworm minimal with systemd"""
    full = work / "full"
    if not (full / "repo" / ".cvmfspublished").exists():
        shutil.rmtree(full, ignore_errors=True)
        full.mkdir()
        _, _, pub, stages = build_minimal_snapshot(full)
        print("snapshot: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
              + f"; {pub.files} files")
    total, tree_total = repo_bytes(full / "repo"), tree_bytes(full / "tree")
    server = CountingServer(full / "repo")
    iso, _, r = iso_for(full, server, full / "keys" / "os.example.org.pub", "bookworm-minimal", "boot.iso")
    side_by_side(full, iso, r.cmdline, server, args.rounds, total, tuple(args.kinds.split(",")),
                 not args.no_prefetch_list)
    if args.skip_scratch:
        server.shutdown()
        return 0
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
