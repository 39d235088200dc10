"""A real Debian bookworm (Essential set + apt) locked, fetched, installed, booted into with chroot."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.lock.lockfile import read_lock
from cernvm_build.rootfs.digest import tree_digest

RECIPE = Path(__file__).with_name("minimal-bookworm.toml")

pytestmark = [pytest.mark.network, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="install mode needs root (chroot)")]


def test_debian_minimal_install_boots_and_is_reproducible(tmp_path):
    cache = tmp_path / "cache"
    lock = tmp_path / "min.lock.toml"
    t0 = time.monotonic()
    assert main(["lock", str(RECIPE), "-o", str(lock), "--cache", str(cache), "-q"]) == 0
    closure = read_lock(lock)
    names = {p.name for p in closure.packages}
    assert {"apt", "dpkg", "bash", "coreutils", "libc6", "base-files"} <= names
    assert main(["fetch", str(lock), "--cache", str(cache), "-j", "8", "-q"]) == 0
    t1 = time.monotonic()
    root = tmp_path / "root"
    assert main(["rootfs", str(lock), str(root), "--cache", str(cache), "--mode", "install", "-q"]) == 0
    t2 = time.monotonic()

    subprocess.run(["chroot", str(root), "/bin/true"], check=True)
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout
    inner = subprocess.run(["chroot", str(root), "dpkg", "--audit"], capture_output=True, text=True)
    assert inner.returncode == 0 and inner.stdout.strip() == ""
    listed = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    assert sum(1 for s in listed if s.strip() == "ii") == len(closure.packages)
    subprocess.run(["chroot", str(root), "apt-get", "--version"], check=True, capture_output=True)
    assert (root / "etc/machine-id").read_bytes() == b""
    assert os.readlink(root / "bin") == "usr/bin"
    assert not list((root / "var/log").rglob("*.log"))
    assert not (root / "var/cache/ldconfig/aux-cache").exists()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert not os.path.ismount(root / "proc")

    again = tmp_path / "again"
    assert main(["rootfs", str(lock), str(again), "--cache", str(cache), "--mode", "install", "-q"]) == 0
    assert tree_digest(root, mtimes=True) == tree_digest(again, mtimes=True)
    print(f"\nlock+fetch {t1 - t0:.1f}s, install {t2 - t1:.1f}s, {len(closure.packages)} packages")
