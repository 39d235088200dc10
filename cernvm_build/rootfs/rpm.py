"""rpm root trees: not implemented yet (the Debian flavour came first).

Planned: unpack = `rpm2archive` (tar) through the same checked extractor; install = `rpm --root DEST
-i` with every locked file at once (no dnf resolution: the lock is the closure), so the tree's rpmdb
records exactly what was installed.
"""

from __future__ import annotations

from pathlib import Path

from ..closure import Closure
from ..errors import RootfsError


def build(closure: Closure, root: Path, files: dict[str, Path], options, sde: int) -> dict:
    raise RootfsError(f"{closure.name}: root trees for flavour 'rpm' are not implemented yet "
                      "(fetch and bundle work; rootfs supports 'deb')")
