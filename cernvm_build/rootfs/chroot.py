"""Running a tree's own programs (maintainer scripts, rpm scriptlets): what must be mounted meanwhile."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from cernvm_build.errors import RootfsError


@contextlib.contextmanager
def mounted_proc(root: Path):
    """/proc inside the tree for the duration of the block only (many postinsts read it)."""
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "proc", "proc", str(proc)], capture_output=True, text=True)
    if r.returncode:
        raise RootfsError(f"cannot mount /proc in {root}: {r.stderr.strip()}")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(proc)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(proc)], capture_output=True)
