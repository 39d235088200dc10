"""Shared helpers for the boot tests: the boot kernel (fetched once from the bookworm minimal lock into
the user's cache) and a small snapshot whose /sbin/init is a busybox script that reports what it sees
and powers the machine off."""
import os
import shutil
import sys
from pathlib import Path

import pytest

from cvmfs_helpers import FQRN  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BOOT_LOCK = ROOT / "closures" / "debian-bookworm-minimal.lock.toml"
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
    from cernvm_build.fetch import FetchOptions

    mirrors = tuple(Path(m) for m in os.environ.get("CERNVM_BUILD_MIRROR", "").split(":") if m)
    return FetchOptions(mirrors=mirrors)


@pytest.fixture(scope="session")
def boot_kernel():
    from cernvm_build.boot.kernel import kernel_parts
    from cernvm_build.closure import read_lock

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
