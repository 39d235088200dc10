"""Files of the client lock's tree are found as a chroot would find them, and never outside the tree."""

from __future__ import annotations

import os

import pytest

from cernvm_build.boot.toolchain import _in_tree
from cernvm_build.errors import CernVMBuildError


def test_chroot_resolution_stays_in_the_tree(tmp_path):
    t = tmp_path / "tree"
    (t / "usr/lib/x").mkdir(parents=True)
    (t / "usr/lib/x/libc.so.6").write_text("libc")
    os.symlink("usr/lib", t / "lib")
    (t / "lib64").mkdir()
    os.symlink("/usr/lib/x/libc.so.6", t / "lib64/ld.so")           # absolute: restarts at the tree's root
    (tmp_path / "host-secret").write_text("host")
    os.symlink("../../../../host-secret", t / "usr/lib/x/climb")     # would leave the tree
    os.symlink(str(tmp_path / "host-secret"), t / "usr/lib/x/abs")    # the host's path, re-rooted
    assert _in_tree(t, "/lib64/ld.so") == t / "usr/lib/x/libc.so.6"
    assert _in_tree(t, "/lib/x/libc.so.6") == t / "usr/lib/x/libc.so.6"
    with pytest.raises(CernVMBuildError, match="climbs above the root"):
        _in_tree(t, "/usr/lib/x/climb")
    with pytest.raises(CernVMBuildError, match="does not exist"):
        _in_tree(t, "/usr/lib/x/abs")
    with pytest.raises(CernVMBuildError, match="not a file"):
        _in_tree(t, "/usr/lib")
