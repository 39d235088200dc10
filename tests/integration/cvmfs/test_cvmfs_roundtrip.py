"""Publish real trees and read them back bit for bit (locally, over HTTP, through the CLI); read the
repository written by cvmfs_server."""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import replace

import pytest
from cvmfs_helpers import FIXTURE_DIR, FQRN, IS_ROOT, assert_same_tree, make_tree, run_cli, tree_entries

from cernvm_build.cvmfs.catalog import FLAG_DIR_NESTED_MOUNTPOINT
from cernvm_build.cvmfs.keys import load_public_key
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
from cernvm_build.cvmfs.reader import Repository, verify_repository
from cernvm_build.cvmfs.serve import serve_in_thread
from cernvm_build.errors import CvmfsError, CvmfsSignatureError, CvmfsWhitelistExpired

SMALL = dict(chunk_size=1 << 20, max_catalog_entries=25, min_catalog_entries=3, durable=False)


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixture")
    with tarfile.open(FIXTURE_DIR / "repository.tar.gz") as tar:
        tar.extractall(d)
    return d / "cvmfs" / "test.cern.ch"


def test_publish_every_entry_type_and_read_back(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    lock = tmp_path / "closure.lock.toml"
    lock.write_text('version = 1\n[[package]]\nname = "bash"\n')
    r = publish(tree, repo, keys, PublishOptions(tag="v1", description="first", lock_file=lock, **SMALL))
    on_disk = sum(1 for st in tree_entries(tree).values() if stat.S_ISREG(st.st_mode))
    assert r.revision == 2 and r.files_read == on_disk and r.files > on_disk  # + lock + markers
    pub = keys / f"{FQRN}.pub"
    with Repository(repo, master_keys=[load_public_key(pub)]) as rr:
        n = assert_same_tree(rr, tree, ignore={"/.cernvm", "/.cernvm/closure.lock.toml"})
        assert n > 40
        assert rr.read("/.cernvm/closure.lock.toml") == lock.read_bytes()
        big = rr.lookup("/usr/share/data/big.bin")
        assert big.is_chunked and big.hash is None and len(big.chunks) == 4
        # hard links: one group inside /bin, the cross-directory link is an independent file
        alias, tool = rr.lookup("/bin/tool-alias"), rr.lookup("/bin/tool")
        assert alias.hardlink_group == tool.hardlink_group > 0 and tool.linkcount == 2
        assert rr.lookup("/etc/tool-elsewhere").hardlink_group == 0
        assert rr.lookup("/etc/hostname").mtimens == 123_456_789
        # nested catalogs: the marked directory and automatic splits, each with its marker entry
        nested = [c.path for c in rr.catalogs()][1:]
        assert "/usr/share/data" in nested and len(nested) >= 2
        for p in nested:
            assert rr.lookup(p + "/.cvmfscatalog").size == 0
            parent = rr.catalog_for(p.rsplit("/", 1)[0] or "/")
            assert parent.lookup(p).flags & FLAG_DIR_NESTED_MOUNTPOINT
        if IS_ROOT:
            assert stat.S_ISCHR(rr.lookup("/dev/null").mode) and rr.lookup("/dev/null").rdev == os.makedev(1, 3)
            assert stat.S_ISSOCK(rr.lookup("/dev/sock").mode) and stat.S_ISFIFO(rr.lookup("/dev/fifo").mode)
        rep = verify_repository(rr)
        assert rep.files == r.files and not rep.problems
        tags = {t.name: t for t in rr.tags()}
        assert set(tags) == {"v1", "trunk", "trunk-previous"}
        assert tags["v1"].hash == rr.manifest.root_catalog and tags["v1"].revision == 2
        assert "closure-lock sha256:" in tags["v1"].description and tags["v1"].description.startswith("first")
    # the whole counters/catalog invariants hold for every catalog written
    proc = run_cli("cvmfs", "verify", repo, "--pubkey", pub)
    assert b"OK" in proc.stdout


def test_read_over_http_and_cli(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    server, url = serve_in_thread(repo)
    try:
        with Repository(url, master_keys=[load_public_key(keys / f"{FQRN}.pub")]) as rr:
            assert_same_tree(rr, tree)
        pub = keys / f"{FQRN}.pub"
        out = run_cli("cvmfs", "cat", url, "/usr/share/data/big.bin", "--pubkey", pub).stdout
        assert out == (tree / "usr/share/data/big.bin").read_bytes()
        listing = run_cli("cvmfs", "ls", url, "/etc", "-l", "--pubkey", pub).stdout.decode()
        assert "motd -> hostname" in listing and "hostname" in listing
        tags = run_cli("cvmfs", "tags", url, "--pubkey", pub).stdout.decode()
        assert tags.splitlines()[-1].startswith("v1\t2\t") or "v1\t2\t" in tags
        assert b"OK" in run_cli("cvmfs", "verify", url, "--pubkey", pub).stdout
        # the scratch area is not served
        bad = run_cli("cvmfs", "cat", url + "/data/txn", "/x", check=False)
        assert bad.returncode != 0
    finally:
        server.shutdown()


def test_init_cli_layout_and_refusals(tmp_path):
    proc = run_cli("cvmfs", "init", tmp_path / "repo", "--name", FQRN, "--keys", tmp_path / "keys")
    assert b"created" in proc.stdout
    for ext, mode in (("masterkey", 0o600), ("key", 0o600), ("pub", 0o644), ("crt", 0o644)):
        assert stat.S_IMODE(os.stat(tmp_path / "keys" / f"{FQRN}.{ext}").st_mode) == mode
    assert len([d for d in (tmp_path / "repo" / "data").iterdir() if len(d.name) == 2]) == 256
    assert (tmp_path / "repo" / ".cvmfswhitelist").is_file()
    with Repository(tmp_path / "repo") as rr:
        assert rr.manifest.revision == 1 and [e.path for e in rr.walk()] == [""]
    bad = run_cli("cvmfs", "init", tmp_path / "r2", "--name", FQRN, "--keys", tmp_path / "r2" / "keys", check=False)
    assert bad.returncode != 0 and b"inside the served repository" in bad.stderr
    assert len(bad.stderr.decode().strip().splitlines()) == 1
    bad = run_cli("cvmfs", "init", tmp_path / "repo", "--name", FQRN, "--keys", tmp_path / "keys", check=False)
    assert bad.returncode != 0 and b"not an empty directory" in bad.stderr
    bad = run_cli("cvmfs", "init", tmp_path / "r3", "--name", "nodots", "--keys", tmp_path / "k3", check=False)
    assert bad.returncode != 0 and b"invalid repository name" in bad.stderr


def test_deterministic_root_hash_with_source_date_epoch(keys, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tree = make_tree(tmp_path / "tree")
    hashes = []
    for i in range(2):
        r = tmp_path / f"repo{i}"
        init_repository(r, FQRN, keys)
        res = publish(tree, r, keys, PublishOptions(tag="snap", workers=1 + i, **SMALL))
        hashes.append(res.root_hash)
        with Repository(r) as rr:
            assert rr.manifest.timestamp == 1700000000
            assert {t.timestamp for t in rr.tags()} == {1700000000}
            hashes.append(rr.manifest.history)
    assert hashes[0] == hashes[2] and hashes[1] == hashes[3]


def test_snapshot_of_a_lock_needs_no_clock(keys, tmp_path, monkeypatch):
    """Without SOURCE_DATE_EPOCH, a snapshot of a lock is dated by the lock's newest metadata date."""
    from cernvm_build.lock.lockfile import dumps
    from tests.unit.test_closure import sample

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    lock = tmp_path / "x.lock.toml"
    lock.write_text(dumps(sample(repositories=(replace(sample().repositories[0],
                                                       date="Tue, 14 Nov 2023 22:13:20 UTC"),))))
    tree = make_tree(tmp_path / "tree")
    hashes = []
    import time as real_time
    import types

    import cernvm_build.cvmfs.publish as publish_module

    for i in range(2):
        r = tmp_path / f"repo{i}"
        # the two repositories are created at clearly different wall-clock times
        clock = types.SimpleNamespace(time=lambda: real_time.time() + 1000 * i, monotonic=real_time.monotonic)
        monkeypatch.setattr(publish_module, "time", clock)
        init_repository(r, FQRN, keys)
        monkeypatch.setattr(publish_module, "time", real_time)
        hashes.append(publish(tree, r, keys, PublishOptions(tag="snap", lock_file=lock, **SMALL)).root_hash)
        with Repository(r) as rr:
            assert rr.manifest.timestamp == 1700000000
            assert {t.timestamp for t in rr.tags() if t.name == "snap"} == {1700000000}
    assert hashes[0] == hashes[1]


def test_fixture_written_by_cvmfs_server(fixture_repo):
    pub = load_public_key(FIXTURE_DIR / "master.pub")
    with pytest.raises(CvmfsWhitelistExpired, match="expired on 2016-02-12"):
        Repository(fixture_repo, master_keys=[pub])
    with Repository(fixture_repo, master_keys=[pub], allow_expired_whitelist=True) as rr:
        assert rr.fqrn == "test.cern.ch" and rr.manifest.revision == 3
        assert rr.read("/bar/hello_world") == b"hello world\n"
        assert rr.read("/bar/author") == "René Meusel\n".encode()
        big = rr.lookup("/bar/big")
        assert big.is_chunked and [c.size for c in big.chunks] == [16777216, 4194304]
        assert len(rr.read("/bar/big")) == 20971520
        assert [e.name for e in rr.listdir("/bar")] == ["1", "2", "3", "4", "author", "big", "hello_world"]
        assert rr.read("/bar/3/2/bar") == b"bar\n"
        rep = verify_repository(rr)
        assert rep.catalogs == 6 and not rep.problems
        assert {t.name for t in rr.tags()} >= {"trunk", "trunk-previous"}
    with Repository(fixture_repo, master_keys=[pub], allow_expired_whitelist=True,
                    tag="generic-2016-01-13T16:04:14Z") as old:
        assert [e.name for e in old.listdir("/")] == ["new_repository"]
    # a master key that did not sign the whitelist is refused
    from cryptography.hazmat.primitives.asymmetric import rsa
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(CvmfsSignatureError, match="not signed by the given master key"):
        Repository(fixture_repo, master_keys=[other], allow_expired_whitelist=True)


def test_fixture_over_http_and_cli(fixture_repo):
    server, url = serve_in_thread(fixture_repo)
    try:
        pub = FIXTURE_DIR / "master.pub"
        bad = run_cli("cvmfs", "verify", url, "--pubkey", pub, check=False)
        assert bad.returncode != 0
        err = bad.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "expired" in err
        ok = run_cli("cvmfs", "verify", url, "--pubkey", pub, "--allow-expired-whitelist")
        assert b"6 catalogs" in ok.stdout
        out = run_cli("cvmfs", "cat", url, "/bar/3/1/bar", "--pubkey", pub, "--allow-expired-whitelist").stdout
        assert out == b"bar\n"
        assert b"trunk-previous" in run_cli("cvmfs", "tags", url, "--allow-expired-whitelist").stdout
        with pytest.raises(CvmfsError, match="no such file"):
            with Repository(url, allow_expired_whitelist=True) as rr:
                rr.lookup("/nope")
    finally:
        server.shutdown()


def test_serve_command_serves_a_repository(repo, keys, tmp_path):
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "cernvm_build.cli", "serve", str(repo), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/.cvmfspublished") as resp:
            assert resp.read() == (repo / ".cvmfspublished").read_bytes()
            assert resp.headers.get("Content-Encoding") is None
        with Repository(url, master_keys=[load_public_key(keys / f"{FQRN}.pub")]) as rr:
            assert rr.manifest.revision == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = run_cli("serve", tmp_path / "nothing", "--port", "0", check=False)
    assert bad.returncode != 0 and b"not a repository" in bad.stderr


def test_paths_resolve_through_symlinks_like_the_kernel(repo, keys, tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr" / "lib").mkdir(parents=True)
    (tree / "usr" / "bin").mkdir()
    (tree / "etc").mkdir()
    (tree / "usr" / "lib" / "os-release").write_text("ID=test\n")
    (tree / "usr" / "bin" / "tool").write_text("tool\n")
    os.symlink("../usr/lib/os-release", tree / "etc" / "os-release")      # relative, with ..
    os.symlink("usr/bin", tree / "bin")                                     # merged /usr
    os.symlink("/etc/os-release", tree / "etc" / "abs")                     # absolute, chained
    os.symlink("loop-b", tree / "etc" / "loop-a")
    os.symlink("loop-a", tree / "etc" / "loop-b")
    publish(tree, repo, keys, PublishOptions(tag="links", **SMALL))
    with Repository(repo, master_keys=[load_public_key(keys / f"{FQRN}.pub")]) as rr:
        assert rr.read("/etc/os-release") == b"ID=test\n"
        assert rr.read("/etc/abs") == b"ID=test\n"
        assert rr.read("/bin/tool") == b"tool\n"
        assert rr.read("/bin/../bin/tool") == b"tool\n"          # /bin/.. is /usr, as in the kernel
        assert rr.resolve("/etc/abs", follow_last=False).symlink == "/etc/os-release"
        with pytest.raises(CvmfsError, match="symbolic link to"):
            rr.read("/etc/abs", follow=False)
        with pytest.raises(CvmfsError, match="too many levels of symbolic links"):
            rr.read("/etc/loop-a")
        with pytest.raises(CvmfsError, match="no such file"):
            rr.read("/bin/../etc/os-release")                  # = /usr/etc/os-release
    out = run_cli("cvmfs", "cat", repo, "/etc/abs", "--pubkey", keys / f"{FQRN}.pub").stdout
    assert out == b"ID=test\n"
