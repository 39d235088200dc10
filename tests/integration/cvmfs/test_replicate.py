"""Stratum-1 replication over real loopback HTTP: full and incremental copies, interruption, hostile or
failing sources, concurrent runs, replicas of replicas and the repository written by cvmfs_server."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cvmfs_helpers import FIXTURE_DIR, FQRN, run_cli

from cernvm_build.cvmfs.keys import load_public_key
from cernvm_build.cvmfs.publish import PublishOptions, publish, repository_lock
from cernvm_build.cvmfs.reader import Repository, verify_repository
from cernvm_build.cvmfs.replicate import ReplicateError, replicate
from cernvm_build.cvmfs.serve import serve_in_thread
from cernvm_build.errors import CvmfsBusyError

SMALL = dict(chunk_size=256 * 1024, max_catalog_entries=40, min_catalog_entries=5, durable=False)


def make_many(root: Path, dirs: int = 6, files: int = 15, size: int = 500, tag: bytes = b"") -> Path:
    for d in range(dirs):
        sub = root / f"d{d:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            (sub / f"f{f:03d}").write_bytes(tag + os.urandom(size))
    return root


def objects(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in (repo / "data").glob("??/*") if not p.name.startswith(".")}


@pytest.fixture
def served(repo):
    server, url = serve_in_thread(repo)
    yield url
    server.shutdown()
    server.server_close()


def pub(keys: Path):
    return [load_public_key(keys / f"{FQRN}.pub")]


def assert_same_snapshot(src: Path, replica: Path, keys: Path) -> None:
    with Repository(src) as s, Repository(replica, master_keys=pub(keys)) as r:
        assert r.manifest.root_catalog == s.manifest.root_catalog
        assert (replica / ".cvmfspublished").read_bytes() == (src / ".cvmfspublished").read_bytes()
        assert [(t.name, t.hash, t.revision) for t in r.tags()] == [(t.name, t.hash, t.revision) for t in s.tags()]
        for e in s.walk():
            if e.is_regular:
                assert r.read(e.path) == s.read(e.path), e.path
        verify_repository(r)
        for t in s.tags():
            with Repository(replica, tag=t.name) as rt:
                verify_repository(rt)


def test_replica_equals_source_and_incremental_moves_only_new_objects(repo, keys, tmp_path, served):
    tree = make_many(tmp_path / "tree")
    (tree / "big").write_bytes(os.urandom(700_000))  # chunked
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    replica = tmp_path / "stratum1"
    proc = run_cli("cvmfs", "replicate", served, replica, "--pubkey", keys / f"{FQRN}.pub", "-j", "4")
    assert b"replicated" in proc.stdout
    assert_same_snapshot(repo, replica, keys)
    run_cli("cvmfs", "verify", replica, "--pubkey", keys / f"{FQRN}.pub")
    assert (replica / ".cvmfs_last_snapshot").exists() and (replica / ".cvmfsreflog").exists()
    # every object reachable from the source's current revision and tags is there
    assert objects(replica) <= objects(repo)

    # second publish: a few new files and a changed one; the next run moves exactly the new objects
    before = objects(repo)
    (tree / "d01" / "new1").write_bytes(os.urandom(3000))
    (tree / "d04" / "new2").write_bytes(os.urandom(3000))
    (tree / "d02" / "f000").write_bytes(os.urandom(500))
    os.utime(tree / "d02" / "f000", (time.time() + 10, time.time() + 10))
    publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    new = objects(repo) - before
    res = replicate(served, replica, pub(keys), workers=3)
    assert res.objects_fetched == len(new), (res, sorted(new))
    assert not res.up_to_date and res.previous_revision == 2 and res.revision == 3
    assert objects(replica) - objects(repo) == set()
    assert_same_snapshot(repo, replica, keys)
    # nothing new: up to date, nothing moved
    again = replicate(served, replica, pub(keys))
    assert again.up_to_date and again.objects_fetched == 0
