"""Shared helpers for the boot tests: the boot kernel (fetched once from the bookworm minimal lock into
the user's cache) and a small snapshot whose /sbin/init is a busybox script that reports what it sees
and powers the machine off."""
import os
import shutil
from pathlib import Path

import pytest
from cvmfs_helpers import FQRN  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BOOT_LOCK = ROOT / "closures" / "debian-bookworm-minimal.lock.toml"
CLIENT_LOCK = ROOT / "closures" / "boot-client.lock.toml"
MARKER = "CERNVM-BOOT-OK"

SNAPSHOT_INIT = """#!/bin/sh
echo "SNAPSHOT-INIT: pid $$ running $0 from the snapshot"
cat /etc/os-release
echo "LOCK-DIGEST: $(sha256sum /.cernvm/closure.lock.toml)"
grep -E ' / | /mnt/.ro ' /proc/mounts
echo CERNVM-BOOT-OK
poweroff -f
"""


def fetch_options():
    from cernvm_build.store.fetch import FetchOptions

    mirrors = tuple(Path(m) for m in os.environ.get("CERNVM_BUILD_MIRROR", "").split(":") if m)
    return FetchOptions(mirrors=mirrors)


@pytest.fixture(scope="session")
def boot_kernel():
    from cernvm_build.boot.kernel import kernel_parts
    from cernvm_build.lock.lockfile import read_lock

    return kernel_parts(read_lock(BOOT_LOCK), fetch_options=fetch_options())


def make_boot_tree(root: Path, os_release: str = 'PRETTY_NAME="CernVM fixture snapshot"\nID=cernvm-fixture\n',
                   init: str = SNAPSHOT_INIT) -> Path:
    """A tiny root: static busybox, an /sbin/init script, /etc/os-release and the usual mount points."""
    for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "mnt", "tmp", "root", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile("/bin/busybox", root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in ("sh", "cat", "echo", "sha256sum", "poweroff", "grep", "ls", "uname", "sleep"):
        if not (root / "bin" / applet).is_symlink():
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "os-release").write_text(os_release)
    (root / "sbin" / "init").write_text(init)
    os.chmod(root / "sbin" / "init", 0o755)
    return root


class CountingServer:
    """serve_in_thread's handler, counting the bytes and requests it serves (what a boot fetched)."""

    def __init__(self, repo: Path, host: str = "127.0.0.1"):
        import threading
        from http.server import ThreadingHTTPServer

        from cernvm_build.cvmfs import serve

        counter = self
        self.bytes = 0
        self.requests = 0
        self.lock = threading.Lock()

        class Counting(serve.Handler):
            def send_file(self, src):
                data = src.read()
                with counter.lock:
                    counter.bytes += len(data)
                    counter.requests += 1
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, 0), serve.handler_for(repo, Counting))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.bytes = self.requests = 0

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def build_minimal_snapshot(workdir: Path, fqrn: str = "os.example.org", tag: str = "bookworm-minimal"):
    """closures/debian-bookworm-minimal.lock.toml -> rootfs --mode install -> published repository.

    Returns (repo, keydir, publish result, seconds per stage). Needs root (maintainer scripts in a chroot).
    """
    import time

    from cernvm_build.cvmfs.keys import create_keys
    from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.rootfs import RootfsOptions, build_rootfs
    from cernvm_build.store.fetch import fetch_closure, package_paths
    from cernvm_build.util.content_store import ContentStore

    closure = read_lock(BOOT_LOCK)
    store = ContentStore.at(None)
    t0 = time.monotonic()
    fetch_closure(closure, store, fetch_options())
    t1 = time.monotonic()
    tree = workdir / "tree"
    build_rootfs(closure, tree, package_paths(closure, store), RootfsOptions(mode="install"))
    t2 = time.monotonic()
    keydir, repo = workdir / "keys", workdir / "repo"
    create_keys(keydir, fqrn, 1_700_000_000)
    init_repository(repo, fqrn, keydir)
    r = publish(tree, repo, keydir, PublishOptions(tag=tag, lock_file=BOOT_LOCK, durable=False))
    t3 = time.monotonic()
    return repo, keydir, r, {"fetch": t1 - t0, "rootfs": t2 - t1, "publish": t3 - t2}


def repo_bytes(repo: Path) -> int:
    """Bytes a client could fetch: every object plus the signed files."""
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and "txn" not in p.parts)
