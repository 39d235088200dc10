"""Incremental publishes, garbage collection, whitelist renewal, locking and fault injection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cvmfs_helpers import FQRN, assert_same_tree, run_cli

from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs.gc import collect_garbage
from cernvm_build.cvmfs.keys import load_public_key
from cernvm_build.cvmfs.publish import FAULT_ENV, PublishOptions, publish, repository_lock, resign_whitelist
from cernvm_build.cvmfs.reader import Repository, verify_repository
from cernvm_build.errors import CvmfsBusyError, CvmfsError

SMALL = dict(chunk_size=256 * 1024, max_catalog_entries=40, min_catalog_entries=5, durable=False)


def make_many(root: Path, dirs: int = 10, files: int = 20, size: int = 300) -> Path:
    for d in range(dirs):
        sub = root / f"d{d:02d}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03d}").write_bytes(os.urandom(size))
    return root


def data_objects(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in (repo / "data").glob("??/*") if p.name[-1] not in "CHXM"}


def test_incremental_republish(repo, keys, tmp_path):
    tree = make_many(tmp_path / "tree")
    (tree / "big").write_bytes(os.urandom(1_000_000))
    first = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    assert first.catalogs >= 4, "the tree should have been split into nested catalogs"
    before = data_objects(repo)

    same = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    assert same.files_read == 0 and same.data_objects_written == 0
    assert same.catalogs_written == 1, "only the root catalog (new revision) is rewritten"
    assert data_objects(repo) == before

    # 1% change: two files in one directory get new content (new mtime), nothing else is read
    for name in ("f000", "f001"):
        p = tree / "d03" / name
        p.write_bytes(os.urandom(300))
        os.utime(p, (time.time() + 5, time.time() + 5))
    changed = publish(tree, repo, keys, PublishOptions(tag="v3", **SMALL))
    assert changed.files_read == 2 and changed.data_objects_written == 2
    with Repository(repo) as rr:
        holder = rr.catalog_for("/d03/f000")
        depth = 1 + (holder.root_prefix != "")
    assert changed.catalogs_written == depth
    assert len(data_objects(repo) - before) == 2

    # same size + mtime + mode: trusted without reading (that is the documented fast path)
    p = tree / "d05" / "f000"
    st = p.stat()
    p.write_bytes(os.urandom(300))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    cached = publish(tree, repo, keys, PublishOptions(tag="v4", **SMALL))
    assert cached.files_read == 0

    with Repository(repo) as rr:
        tags = {t.name: t for t in rr.tags()}
        assert [tags[n].revision for n in ("v1", "v2", "v3", "v4")] == [2, 3, 4, 5]
        assert tags["trunk-previous"].hash == tags["v3"].hash
        verify_repository(rr)
    with Repository(repo, tag="v1") as old:  # old snapshots stay readable, objects are shared
        assert len(old.read("/d03/f000")) == 300 and old.read("/big") == (tree / "big").read_bytes()


def test_gc_keeps_only_objects_of_kept_tags(repo, keys, tmp_path):
    tree = make_many(tmp_path / "tree", dirs=3, files=5)
    (tree / "only-v1").write_bytes(b"v1 only content")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    os.unlink(tree / "only-v1")
    (tree / "only-v2").write_bytes(b"v2 only content")
    publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    os.unlink(tree / "only-v2")
    (tree / "v3").write_bytes(b"v3 content")
    publish(tree, repo, keys, PublishOptions(tag="v3", **SMALL))
    with Repository(repo, tag="v1") as r1:
        v1_only = obj.object_relpath(r1.lookup("/only-v1").hash)
    with Repository(repo, tag="v2") as r2:
        v2_only = obj.object_relpath(r2.lookup("/only-v2").hash)

    dry = collect_garbage(repo, keys, ["v2"], dry_run=True)
    assert dry.objects_removed > 0 and (repo / v1_only).exists()
    proc = run_cli("cvmfs", "gc", repo, "--keep", "v2", "--keys", keys)
    assert f"removed {dry.objects_removed} objects".encode() in proc.stdout
    assert not (repo / v1_only).exists() and (repo / v2_only).exists()
    with Repository(repo) as rr:
        assert {t.name for t in rr.tags()} == {"v2", "trunk"}
        verify_repository(rr)
    with Repository(repo, tag="v2") as r2:
        assert r2.read("/only-v2") == b"v2 only content"
        verify_repository(r2)
    again = collect_garbage(repo, keys, ["v2"])
    assert again.objects_removed == 0
    with pytest.raises(CvmfsError, match="no such tag"):
        collect_garbage(repo, keys, ["nope"])


def test_resign_renews_an_expired_whitelist(repo, keys):
    pub = load_public_key(keys / f"{FQRN}.pub")
    resign_whitelist(repo, keys, days=0)
    with pytest.raises(CvmfsError, match="expired"):
        Repository(repo, master_keys=[pub])
    proc = run_cli("cvmfs", "resign", repo, "--keys", keys, "--days", "10")
    assert b"renewed" in proc.stdout
    with Repository(repo, master_keys=[pub]) as rr:
        assert rr.whitelist.expires - time.time() > 9 * 86400


def test_second_publisher_fails_or_waits(repo, keys, tmp_path):
    tree = make_many(tmp_path / "tree", dirs=1, files=3)
    with repository_lock(repo):
        with pytest.raises(CvmfsBusyError, match="being written by another process"):
            publish(tree, repo, keys, PublishOptions(tag="x", **SMALL))
        proc = run_cli("publish", tree, "--repo", repo, "--keys", keys, "--tag", "x", "--no-sync", check=False)
        assert proc.returncode == 3 and f"pid {os.getpid()}".encode() in proc.stderr
        assert len(proc.stderr.decode().strip().splitlines()) == 1
    # with --wait the second publisher gets the lock once the first releases it
    holder = threading.Event()
    done = threading.Event()

    def hold():
        with repository_lock(repo):
            holder.set()
            done.wait(1.0)

    t = threading.Thread(target=hold)
    t.start()
    holder.wait()
    proc = run_cli("publish", tree, "--repo", repo, "--keys", keys, "--tag", "x", "--wait", "20", "--no-sync")
    t.join()
    assert b"revision 2" in proc.stdout


def _publish_cmd(tree: Path, repo: Path, keys: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "cernvm_build.cli", "publish", str(tree), "--repo", str(repo), "--keys", str(keys),
            "--tag", tag, "--chunk-size", str(256 * 1024), "--max-catalog-entries", "40",
            "--min-catalog-entries", "5", "-j", "2"]


def _assert_still_v1(repo: Path, keys: Path, v1_root: str, tree_v1: Path) -> None:
    with Repository(repo, master_keys=[load_public_key(keys / f"{FQRN}.pub")]) as rr:
        assert rr.manifest.root_catalog == v1_root
        verify_repository(rr)
        assert_same_tree(rr, tree_v1)


@pytest.mark.parametrize("stage", ["objects", "catalogs", "manifest"])
def test_publisher_killed_at_each_stage_leaves_previous_snapshot(repo, keys, tmp_path, stage):
    tree = make_many(tmp_path / "tree", dirs=4, files=10)
    v1 = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    import shutil
    snapshot = tmp_path / "tree-v1"
    shutil.copytree(tree, snapshot, symlinks=True)
    (tree / "d00" / "new").write_bytes(os.urandom(2_000_000))
    proc = subprocess.run(_publish_cmd(tree, repo, keys, "v2"), env={**os.environ, FAULT_ENV: stage},
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    _assert_still_v1(repo, keys, v1.root_hash, snapshot)
    # the next publisher cleans up and succeeds (the lock died with the killed process)
    v2 = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    assert v2.revision == 3 and not [p for p in (repo / "data" / "txn").iterdir() if p.name != "publish.lock"]


def test_publisher_killed_mid_write(repo, keys, tmp_path):
    tree = make_many(tmp_path / "tree", dirs=2, files=5)
    v1 = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    import shutil
    snapshot = tmp_path / "tree-v1"
    shutil.copytree(tree, snapshot)
    bulk = tree / "bulk"
    for i in range(120):  # hex text: deflate has work to do (random bytes would be stored as they are, fast)
        (bulk / f"{i // 10}").mkdir(parents=True, exist_ok=True)
        (bulk / f"{i // 10}" / f"{i}").write_bytes(os.urandom(200_000).hex().encode())
    before = len(data_objects(repo))
    p = subprocess.Popen(_publish_cmd(tree, repo, keys, "v2"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(data_objects(repo)) < before + 5 and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the publisher finished before it could be killed"
    _assert_still_v1(repo, keys, v1.root_hash, snapshot)


def _first_file_object(repo: Path) -> Path:
    with Repository(repo) as rr:
        return repo / obj.object_relpath(rr.lookup("/d00/f000").hash)


def test_corruption_is_refused(repo, keys, tmp_path):
    tree = make_many(tmp_path / "tree", dirs=2, files=3)
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    pub = keys / f"{FQRN}.pub"
    target = _first_file_object(repo)
    original = target.read_bytes()

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x40
    target.write_bytes(bytes(flipped))
    proc = run_cli("cvmfs", "verify", repo, "--pubkey", pub, check=False)
    assert proc.returncode != 0 and b"is corrupted" in proc.stderr
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert run_cli("cvmfs", "cat", repo, "/d00/f000", check=False).returncode != 0

    target.unlink()
    proc = run_cli("cvmfs", "verify", repo, "--pubkey", pub, check=False)
    assert proc.returncode != 0 and b"is missing" in proc.stderr
    target.write_bytes(original)
    run_cli("cvmfs", "verify", repo, "--pubkey", pub)

    manifest = repo / ".cvmfspublished"
    good = manifest.read_bytes()
    manifest.write_bytes(good.replace(b"\nD240\n", b"\nD999\n"))
    proc = run_cli("cvmfs", "verify", repo, "--integrity-only", check=False)
    assert proc.returncode != 0 and b"signed digest" in proc.stderr
    bad_sig = bytearray(good)
    bad_sig[-5] ^= 1
    manifest.write_bytes(bytes(bad_sig))
    proc = run_cli("cvmfs", "ls", repo, check=False)
    assert proc.returncode != 0 and b"signature does not verify" in proc.stderr
    manifest.write_bytes(good)

    wl = repo / ".cvmfswhitelist"
    good_wl = wl.read_bytes()
    bad_wl = bytearray(good_wl)
    bad_wl[-3] ^= 1
    wl.write_bytes(bytes(bad_wl))
    proc = run_cli("cvmfs", "verify", repo, "--pubkey", pub, check=False)
    assert proc.returncode != 0 and b"not signed by the given master key" in proc.stderr
    wl.write_bytes(good_wl)

    with Repository(repo) as rr:
        cat = repo / obj.object_relpath(rr.root_hash, "C")
    cat_bytes = cat.read_bytes()
    cat.write_bytes(cat_bytes[:-10])
    proc = run_cli("cvmfs", "ls", repo, check=False)
    assert proc.returncode != 0 and b"is corrupted" in proc.stderr
    cat.write_bytes(cat_bytes)
    run_cli("cvmfs", "verify", repo, "--pubkey", pub)


def test_verify_needs_the_master_key_or_says_untrusted(repo, keys, tmp_path):
    """A repository signed by anybody's keys must not pass `cvmfs verify` for lack of a key."""
    from cernvm_build.cvmfs.keys import create_keys
    from cernvm_build.cvmfs.publish import init_repository

    tree = make_many(tmp_path / "tree", dirs=1, files=2)
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    proc = run_cli("cvmfs", "verify", repo, check=False)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 1 and b"OK" not in proc.stdout and len(err.splitlines()) == 1
    assert "--pubkey" in err and "--integrity-only" in err
    proc = run_cli("cvmfs", "verify", repo, "--integrity-only")
    assert b"UNTRUSTED" in proc.stdout and b": OK" not in proc.stdout
    assert b": OK" in run_cli("cvmfs", "verify", repo, "--pubkey", keys / f"{FQRN}.pub").stdout
    # an impostor's repository of the same name, with its own keys: integrity holds, trust does not
    other_keys = tmp_path / "impostor-keys"
    create_keys(other_keys, FQRN, 1_700_000_000)
    impostor = tmp_path / "impostor"
    init_repository(impostor, FQRN, other_keys)
    publish(tree, impostor, other_keys, PublishOptions(tag="v1", **SMALL))
    assert b"UNTRUSTED" in run_cli("cvmfs", "verify", impostor, "--integrity-only").stdout
    proc = run_cli("cvmfs", "verify", impostor, "--pubkey", keys / f"{FQRN}.pub", check=False)
    assert proc.returncode == 1 and b"not signed by the given master key" in proc.stderr
    proc = run_cli("cvmfs", "verify", repo, "--pubkey", keys / f"{FQRN}.pub", "--integrity-only", check=False)
    assert proc.returncode == 1
