"""Shared helpers for the CernVM-FS tests: trees with every entry type, CLI runners, tree comparison."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cvmfs-test.cern.ch-2016"
if not FIXTURE_DIR.is_dir():
    FIXTURE_DIR = Path("/work/shared/fixtures/cvmfs-test.cern.ch-2016")
FQRN = "test.example.org"
IS_ROOT = os.geteuid() == 0


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `cernvm-build ARGS` in a subprocess (the real entry point, exit code and stderr)."""
    proc = subprocess.run([sys.executable, "-m", "cernvm_build.cli", *map(str, args)], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cernvm-build {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
    return proc


def make_tree(root: Path, big_size: int = 3 * 1024 * 1024 + 12345) -> Path:
    """A tree with regular, empty, big (chunked with small chunk sizes), hard-linked, symlinked,
    xattr-carrying files, nested directories, a .cvmfscatalog marker and (as root) device nodes,
    a FIFO and a socket."""
    root.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("cernvm\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "etc" / "motd").symlink_to("hostname")
    (root / "etc" / "dangling").symlink_to("/nowhere/$(ARCH)")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-alias")
    os.link(root / "bin" / "tool", root / "etc" / "tool-elsewhere")  # cross-directory: stored independently
    (root / "usr" / "share" / "data").mkdir(parents=True)
    (root / "usr" / "share" / "data" / "big.bin").write_bytes(os.urandom(big_size))
    (root / "usr" / "share" / "data" / ".cvmfscatalog").write_bytes(b"")
    # compressible and chunked (big.bin, random, is stored uncompressed): both kinds of object in one tree
    (root / "usr" / "share" / "data" / "big.txt").write_bytes(b"".join(b"row %d\n" % i for i in range(400_000)))
    for i in range(30):
        d = root / "usr" / "lib" / f"pkg{i:02d}"
        d.mkdir(parents=True)
        (d / "file.txt").write_text(f"package {i}\n" * (i + 1))
    (root / "xattr").write_text("with attributes\n")
    os.setxattr(root / "xattr", "user.color", b"blue")
    os.setxattr(root / "xattr", "user.empty", b"")
    (root / "unicode-é").write_text("utf-8 name\n")
    os.chmod(root / "etc" / "hostname", 0o600)
    os.utime(root / "etc" / "hostname", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    if IS_ROOT:
        dev = root / "dev"
        dev.mkdir()
        os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(dev / "sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
        os.mkfifo(dev / "fifo")
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(dev / "sock"))
        s.close()
        os.chown(root / "etc" / "hostname", 123, 456)
    return root


def tree_entries(root: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            p = Path(dirpath) / name
            out["/" + str(p.relative_to(root))] = os.lstat(p)
    return out


def assert_same_tree(repo, root: Path, ignore: set[str] = frozenset()) -> int:
    """Every entry of ROOT is in the repository with the same type, mode, owner, mtime, size, target,
    xattrs and bytes; returns the number of entries compared."""
    from cernvm_build.cvmfs.catalog import CatalogReader  # noqa: F401  (imports checked)

    disk = tree_entries(root)
    published = {e.path: e for e in repo.walk() if e.path}
    extra = set(published) - set(disk) - ignore
    extra = {p for p in extra if not p.endswith("/.cvmfscatalog")}
    assert not extra, f"unexpected entries in the repository: {sorted(extra)}"
    for path, st in disk.items():
        if path in ignore:
            continue
        assert path in published, f"{path} missing from the repository"
        e = published[path]
        assert e.mode == st.st_mode, (path, oct(e.mode), oct(st.st_mode))
        assert (e.uid, e.gid) == (st.st_uid, st.st_gid), path
        assert e.mtime == st.st_mtime_ns // 10**9, path
        assert (e.mtimens or 0) == st.st_mtime_ns % 10**9, path
        if stat.S_ISREG(st.st_mode):
            assert e.is_regular and e.size == st.st_size, path
            assert repo.read(path) == (root / path[1:]).read_bytes(), f"{path}: content differs"
        elif stat.S_ISLNK(st.st_mode):
            assert e.is_symlink and e.symlink == os.readlink(root / path[1:]), path
            assert e.size == len(e.symlink.encode()), path
        elif stat.S_ISDIR(st.st_mode):
            assert e.is_dir
            subdirs = sum(1 for c in (root / path[1:]).iterdir() if c.is_dir() and not c.is_symlink())
            assert e.linkcount == 2 + subdirs, path
        else:
            assert e.is_special, path
            assert e.rdev == (st.st_rdev if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else 0)
        if not stat.S_ISLNK(st.st_mode):
            expect = {k: os.getxattr(root / path[1:], k, follow_symlinks=False)
                      for k in os.listxattr(root / path[1:], follow_symlinks=False)}
            assert e.xattrs == expect, path
    return len(disk)


# ------------------------------------------------------------------ fixtures (imported by conftest.py)


@pytest.fixture(scope="session")
def session_keys(tmp_path_factory) -> Path:
    """One key set for the whole run (RSA key generation is the slow part of `init`)."""
    import shutil  # noqa: F401

    from cernvm_build.cvmfs.keys import create_keys

    keydir = tmp_path_factory.mktemp("keys")
    create_keys(keydir, FQRN, 1_700_000_000)
    return keydir


@pytest.fixture
def keys(session_keys, tmp_path) -> Path:
    import shutil

    k = tmp_path / "keys"
    shutil.copytree(session_keys, k)
    return k


@pytest.fixture
def repo(keys, tmp_path) -> Path:
    from cernvm_build.cvmfs.publish import init_repository

    r = tmp_path / "stratum0"
    init_repository(r, FQRN, keys)
    return r
