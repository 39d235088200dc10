"""The C client on the host with real FUSE: every entry type bit for bit, tags, keys, corruption, cache."""

from __future__ import annotations

import errno
import os
import stat
import zlib
from pathlib import Path

import pytest
from cvmfs_helpers import FQRN, IS_ROOT, make_tree, run_cli, tree_entries

from cernvm_build.boot import client
from cernvm_build.cvmfs.keys import create_keys
from cernvm_build.cvmfs.objects import object_relpath
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.cvmfs.serve import serve_in_thread
from cernvm_build.errors import MountError
from tests.support.nginx import free_port

SMALL = dict(chunk_size=1 << 20, max_catalog_entries=25, min_catalog_entries=3, durable=False)

pytestmark = pytest.mark.skipif(not (IS_ROOT and os.path.exists("/dev/fuse")), reason="needs root and /dev/fuse")


@pytest.fixture
def published(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    lock = tmp_path / "closure.lock.toml"
    lock.write_text('lock-version = 1\nname = "fixture"\n')
    r = publish(tree, repo, keys, PublishOptions(tag="v1", lock_file=lock, **SMALL))
    server, url = serve_in_thread(repo)
    yield tree, url, r, lock
    server.shutdown()


def _opts(url, keys, tmp_path, **kw) -> client.ClientOptions:
    return client.ClientOptions(urls=[url], pubkeys=[keys / f"{FQRN}.pub"], cache_dir=tmp_path / "cache",
                                retries=1, timeout=5, **kw)


def _xattrs(p: Path) -> dict[str, bytes]:
    return {k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False)}


def test_mount_every_entry_type_bit_for_bit(published, keys, tmp_path, binary):
    tree, url, r, lock = published
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with client.start(_opts(url, keys, tmp_path, tag="v1"), mnt, binary):
        disk, mounted = tree_entries(tree), tree_entries(mnt)
        extra = {p for p in set(mounted) - set(disk) if not p.endswith("/.cvmfscatalog")}
        assert extra == {"/.cernvm", "/.cernvm/closure.lock.toml"}
        assert (mnt / ".cernvm" / "closure.lock.toml").read_bytes() == lock.read_bytes()
        for path, st in disk.items():
            got = mounted[path]
            src, dst = tree / path[1:], mnt / path[1:]
            assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(st.st_mode), path
            assert got.st_mode == st.st_mode, (path, oct(got.st_mode), oct(st.st_mode))
            assert (got.st_uid, got.st_gid) == (st.st_uid, st.st_gid), path
            assert got.st_mtime_ns == st.st_mtime_ns, path
            if stat.S_ISREG(st.st_mode):
                assert got.st_size == st.st_size and dst.read_bytes() == src.read_bytes(), path
            elif stat.S_ISLNK(st.st_mode):
                assert os.readlink(dst) == os.readlink(src), path
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                assert got.st_rdev == st.st_rdev, path
            if not stat.S_ISLNK(st.st_mode):
                assert _xattrs(dst) == _xattrs(src), path
        assert _xattrs(mnt / "xattr") == {"user.color": b"blue", "user.empty": b""}
        # hard links inside one directory share an inode; the cross-directory copy does not
        assert mounted["/bin/tool"].st_ino == mounted["/bin/tool-alias"].st_ino
        assert mounted["/bin/tool"].st_nlink == 2
        assert mounted["/etc/tool-elsewhere"].st_ino != mounted["/bin/tool"].st_ino
        # chunked file read at odd offsets across chunk borders
        big = (tree / "usr/share/data/big.bin").read_bytes()
        with open(mnt / "usr/share/data/big.bin", "rb") as f:
            f.seek((1 << 20) - 7)
            assert f.read(1 << 20) == big[(1 << 20) - 7:(2 << 20) - 7]
        # what is mounted, readable on the root
        assert os.getxattr(mnt, "user.root_hash").decode() == r.root_hash
        assert os.getxattr(mnt, "user.fqrn").decode() == FQRN
        assert os.getxattr(mnt, "user.tag") == b"v1"
        assert int(os.getxattr(mnt, "user.rx_bytes")) > len(big)
        with pytest.raises(OSError) as exc:
            open(mnt / "etc" / "new", "w")
        assert exc.value.errno in (errno.EROFS, errno.EACCES)
    assert not client.is_mounted(mnt)


def test_tags_and_root_hash_select_old_snapshots(published, repo, keys, tmp_path, binary):
    tree, url, r1, _ = published
    (tree / "etc" / "hostname").write_text("second\n")
    (tree / "new-in-v2").write_text("v2\n")
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with client.start(_opts(url, keys, tmp_path, tag="v1"), mnt, binary):
        assert (mnt / "etc/hostname").read_text() == "cernvm\n" and not (mnt / "new-in-v2").exists()
    with client.start(_opts(url, keys, tmp_path), mnt, binary):  # newest revision
        assert (mnt / "etc/hostname").read_text() == "second\n"
        assert os.getxattr(mnt, "user.root_hash").decode() == r2.root_hash
    with client.start(_opts(url, keys, tmp_path, root_hash=r1.root_hash), mnt, binary):
        assert (mnt / "etc/hostname").read_text() == "cernvm\n"
    with pytest.raises(MountError, match=r"no tag 'v9' \(known: .*v1.*v2"):
        client.start(_opts(url, keys, tmp_path, tag="v9"), mnt, binary)
    assert not client.is_mounted(mnt)


def test_wrong_public_key_refuses_with_one_line(published, tmp_path, binary):
    _, url, _, _ = published
    other = tmp_path / "other-keys"
    create_keys(other, FQRN, 1_700_000_000)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with pytest.raises(MountError) as exc:
        client.start(_opts(url, other, tmp_path), mnt, binary)
    msg = str(exc.value)
    assert "\n" not in msg and "not signed by the given master key" in msg, msg
    assert not client.is_mounted(mnt)
    # the CLI says the same in one line and exits non-zero
    proc = run_cli("mount", url, mnt, "--pubkey", other / f"{FQRN}.pub", "--cache", tmp_path / "c2", check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "not signed by the given master key" in err, err


def test_corrupted_object_gives_eio_not_wrong_data(published, repo, keys, tmp_path, binary):
    tree, url, _, _ = published
    with Repository(repo) as rr:
        e = rr.lookup("/bin/tool")
        z = rr.lookup("/usr/lib/pkg29/file.txt")
    obj = repo / object_relpath(e.hash)
    obj.chmod(0o644)
    evil = b"#!/bin/sh\necho evil\n"  # the tool's size: a tiny file is stored uncompressed, bounded by its size
    assert not e.compressed and z.compressed
    obj.write_bytes(evil)  # well-formed for its kind (raw), wrong hash
    zobj = repo / object_relpath(z.hash)
    zobj.chmod(0o644)
    zobj.write_bytes(zlib.compress(b"package 28\n" * 30))  # a valid zlib stream, wrong hash
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with client.start(_opts(url, keys, tmp_path), mnt, binary) as m:
        with pytest.raises(OSError) as exc:
            (mnt / "bin" / "tool").read_bytes()
        assert exc.value.errno == errno.EIO
        with pytest.raises(OSError) as exc:
            (mnt / "usr" / "lib" / "pkg29" / "file.txt").read_bytes()
        assert exc.value.errno == errno.EIO
        assert (mnt / "etc" / "hostname").read_bytes() == (tree / "etc" / "hostname").read_bytes()
        assert m.output().count("is corrupted") >= 2


def test_server_failover_cli_background_and_small_cache(published, keys, tmp_path, binary):
    tree, url, _, _ = published
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = run_cli("mount", f"{dead};{url}", mnt, "--pubkey", keys / f"{FQRN}.pub", "--tag", "v1",
                   "--cache", tmp_path / "cache", "--cache-size", "1")
    try:
        assert client.is_mounted(mnt), proc.stderr
        big = (tree / "usr/share/data/big.bin").read_bytes()
        assert (mnt / "usr/share/data/big.bin").read_bytes() == big  # 3 MB through a 1 MB cache
        cached = sum(p.stat().st_size for p in (tmp_path / "cache" / "data").rglob("*") if p.is_file())
        assert cached < 2 << 20, cached
    finally:
        client.unmount(mnt)
    assert not client.is_mounted(mnt)
