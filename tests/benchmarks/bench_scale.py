#!/usr/bin/env python3
"""Benchmark: one stratum-0 -> one stratum-1 (nginx) -> one squid -> 32 booting clients.

Run alone (not a test; needs root for the one recording boot, qemu, nginx, squid, wget):
    bash tools/demo.sh                      # the bookworm snapshot and its ISO, once
    .venv/bin/python tests/benchmarks/bench_scale.py [--clients 32] [--workdir DIR]

1. `cvmfs replicate` copies the demo repository (served by `cernvm-build serve`) into a stratum-1,
   timed against wget copying every file from the same server (the reference `cvmfs_swissknife pull` is not
   built here).
2. The boot working set is recorded once: the demo ISO's kernel and initramfs boot the snapshot under
   qemu to the login prompt, with the client pointed at a recording server (cvmfs.url=); the list of
   requests, in order, is kept in WORKDIR/working-set.txt.
3. The stratum-1 is served by Debian's nginx with `cvmfs serve-config --nginx`. N reader processes fetch
   the working set in boot order, at the same time: first DIRECT from the replica, then through one
   squid (memory cache, collapsed forwarding, as sites configure it for CernVM-FS). Printed: bytes the
   replica served (goal: about 1x the working set when proxied, not Nx), squid's hit ratio, and the
   p50/p99 object latency in each mode.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot, extract_from_iso  # noqa: E402
from cernvm_build.cvmfs import serve  # noqa: E402
from cernvm_build.cvmfs.manifest import Manifest  # noqa: E402
from tests.support.nginx import Nginx, free_port  # noqa: E402
from tests.support.plaincopy import wget_copy  # noqa: E402
from tests.support.squid import Squid  # noqa: E402

CLI = str(Path(sys.executable).with_name("cernvm-build"))


class Recording(serve.Handler):
    paths: list[str]

    def send_file(self, src) -> None:
        self.paths.append(self.path)
        super().send_file(src)


def record_working_set(repo: Path, iso: Path, work: Path) -> list[str]:
    """The requests a boot of the snapshot makes, in order, up to the login prompt."""
    cached = work / "working-set.txt"
    if cached.exists():
        return cached.read_text().split()
    handler = serve.handler_for(repo, Recording)
    handler.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kernel = extract_from_iso(iso, "/boot/vmlinuz", work / "vmlinuz")
        initrd = extract_from_iso(iso, "/boot/initrd.img", work / "initrd.img")
        url = f"http://{HOST_FROM_GUEST}:{server.server_address[1]}/"
        run = boot(QemuOptions(kernel=kernel, initrd=initrd, memory_mb=2048,
                               append=f"console=ttyS0,115200 cvmfs.url={url}"),
                   work / "record-serial.log", 900, "login:", stop_at_marker=True)
        if run.marker_seconds is None:
            sys.exit(f"the recording boot reached no login prompt:\n{run.tail()}")
    finally:
        server.shutdown()
    paths = [p.split("?")[0] for p in handler.paths]
    cached.write_text("\n".join(paths) + "\n")
    return paths


def reader(args) -> list[float]:
    """One client: every path in order, one keep-alive connection (to the proxy, or to the replica)."""
    host, port, proxy, prefix, paths = args
    target = proxy or (host, port)
    conn = http.client.HTTPConnection(*target, timeout=60)
    lat = []
    for p in paths:
        url = f"http://{host}:{port}{prefix}{p}" if proxy else f"{prefix}{p}"
        t = time.perf_counter()
        conn.request("GET", url)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
        lat.append(time.perf_counter() - t)
    conn.close()
    return lat


def nginx_bytes(log: Path, start: int) -> tuple[int, int]:
    """(requests, body bytes) nginx logged after byte offset START (combined log format)."""
    n = total = 0
    with open(log, "rb") as f:
        f.seek(start)
        for line in f.read().decode(errors="replace").splitlines():
            fields = line.split('"')
            if len(fields) > 2:
                status_bytes = fields[2].split()
                if len(status_bytes) >= 2 and status_bytes[1].isdigit():
                    n += 1
                    total += int(status_bytes[1])
    return n, total


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def timed(cmd: list[str], **kw) -> float:
    t = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT / "build/debian-bookworm/cvmfs/repo")
    ap.add_argument("--iso", type=Path, default=ROOT / "build/debian-bookworm/iso/debian-bookworm.iso")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build/bench-scale")
    ap.add_argument("--clients", type=int, default=32)
    a = ap.parse_args()
    if not (a.repo / ".cvmfspublished").exists() or not a.iso.exists():
        sys.exit(f"{a.repo} or {a.iso} missing: run `bash tools/demo.sh` first")
    fqrn = Manifest.parse((a.repo / ".cvmfspublished").read_bytes(), "manifest")[0].fqrn
    pub = a.repo.parent / "keys" / f"{fqrn}.pub"
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    origin, url = serve.serve_in_thread(a.repo)
    print(f"stratum-0: {a.repo} ({sum(f.stat().st_size for f in a.repo.rglob('*') if f.is_file()) / 1e6:.1f} MB)"
          f" served at {url}")

    # 1. replication
    s1 = work / "stratum1"
    shutil.rmtree(s1, ignore_errors=True)
    t_rep = timed([CLI, "cvmfs", "replicate", url, str(s1), "--pubkey", str(pub), "-j", "8"],
                  stdout=subprocess.DEVNULL)
    t_up = timed([CLI, "cvmfs", "replicate", url, str(s1), "--pubkey", str(pub)], stdout=subprocess.DEVNULL)
    size = sum(f.stat().st_size for f in s1.rglob("*") if f.is_file())
    mirror = work / "wget"
    shutil.rmtree(mirror, ignore_errors=True)
    t_wget = wget_copy(url, a.repo, mirror)[0] if shutil.which("wget") else float("nan")
    print(f"cvmfs replicate (full, verified)  {t_rep:7.1f} s  {size / 1e6 / t_rep:6.1f} MB/s; up to date {t_up:.2f} s")
    print(f"wget, every file (no verification) {t_wget:6.1f} s  ratio wget/replicate {t_wget / t_rep:.2f}x "
          "(cvmfs_swissknife pull is not built here: not measured)")

    # 2. working set
    paths = record_working_set(a.repo, a.iso, work)
    ws_bytes = sum((a.repo / p.lstrip("/")).stat().st_size for p in paths if (a.repo / p.lstrip("/")).is_file())
    print(f"boot working set: {len(paths)} requests, {ws_bytes / 1e6:.1f} MB")
    origin.shutdown()

    # 3. N clients, DIRECT and through squid, from the replica served by nginx
    port = free_port()
    site = work / "nginx" / "site.conf"
    subprocess.run([CLI, "cvmfs", "serve-config", "--nginx", str(s1), "--listen", f"127.0.0.1:{port}",
                    "-o", str(site)], check=True, stdout=subprocess.DEVNULL)
    prefix = f"/cvmfs/{fqrn}"
    rows = []
    with Nginx(work / "nginx", site, port) as ngx:
        for mode in ("DIRECT", "squid"):
            squid = Squid(work, f"bench{mode}", extra="collapsed_forwarding on\n").start() if mode == "squid" else None
            try:
                start = ngx.access_log.stat().st_size if ngx.access_log.exists() else 0
                proxy = ("127.0.0.1", squid.port) if squid else None
                jobs = [("127.0.0.1", port, proxy, prefix, paths)] * a.clients
                t = time.monotonic()
                with multiprocessing.Pool(a.clients) as pool:
                    lats = [x for lat in pool.map(reader, jobs) for x in lat]
                wall = time.monotonic() - t
                time.sleep(1)
                n, served = nginx_bytes(ngx.access_log, start)
                hits = None
                if squid:
                    codes = [c for c, _ in squid.access()]
                    hits = sum("HIT" in c for c in codes) / max(1, len(codes))
                rows.append((mode, wall, n, served, hits, pct(lats, 0.5), pct(lats, 0.99),
                             statistics.mean(lats)))
            finally:
                if squid:
                    squid.cleanup()
    print(f"{a.clients} clients reading the working set at once ({a.clients} x {ws_bytes / 1e6:.1f} MB = "
          f"{a.clients * ws_bytes / 1e6:.0f} MB asked for):")
    for mode, wall, n, served, hits, p50, p99, mean in rows:
        print(f"  {mode:<7} {wall:6.1f} s   replica served {n:6d} requests, {served / 1e6:8.1f} MB "
              f"= {served / ws_bytes:5.2f}x the working set"
              + (f"   squid hit ratio {100 * hits:5.1f} %" if hits is not None else " " * 24)
              + f"   object latency p50 {p50 * 1e3:6.1f} ms  p99 {p99 * 1e3:7.1f} ms")
    os.sync()


if __name__ == "__main__":
    main()
