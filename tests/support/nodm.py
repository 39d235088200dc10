"""For hosts WITHOUT device-mapper (tests and benchmarks only): the PATH wrappers of tests/support/nodm-bin
let diskimage-builder partition its loop device there (see nodm-bin/README.md). A normal host needs none."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BIN = Path(__file__).with_name("nodm-bin")


def _has_dm() -> bool:
    try:
        return any(line.split()[-1] == "device-mapper" for line in Path("/proc/misc").read_text().splitlines()
                   if line.strip())
    except OSError:
        return False


def needed() -> bool:
    """The kernel has no device-mapper (not even as module dm_mod): kpartx cannot work, the wrappers are
    needed. (A /dev/mapper/control node may exist all the same: the driver is what counts.)"""
    if _has_dm():
        return False
    try:
        subprocess.run(["modprobe", "-q", "dm_mod"], capture_output=True, check=False)
    except OSError:                 # no modprobe (kmod) at all
        pass
    return not _has_dm()


def env(base: dict[str, str] | None = None) -> dict[str, str]:
    """BASE (default os.environ) with the wrappers first on PATH when this host needs them."""
    e = dict(os.environ if base is None else base)
    if needed():
        e["PATH"] = f"{BIN}:{e.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return e
