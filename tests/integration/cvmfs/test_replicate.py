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
from cernvm_build.cvmfs.replicate import replicate
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


class _Faulty(SimpleHTTPRequestHandler):
    """Serves a repository, except: FAULTS maps a request path to 'error' (HTTP 503), 'drip' (one byte
    every 0.2 s) or 'hang' (headers, then silence); DELAY slows every object request down."""

    faults: dict[str, str] = {}
    delay = 0.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0].lstrip("/")
        mode = self.faults.get(path)
        if self.delay and path.startswith("data/"):
            time.sleep(self.delay)
        if mode == "error":
            self.send_error(503, "overloaded")
            return
        if mode in ("drip", "hang"):
            body = (Path(self.directory) / path).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    if mode == "hang":
                        time.sleep(60)
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        super().do_GET()


def faulty_server(repo: Path, faults: dict[str, str] | None = None, delay: float = 0.0):
    handler = type("H", (_Faulty,), {"faults": faults or {}, "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(repo)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _two_revisions(repo, keys, tmp_path, served, replica):
    tree = make_many(tmp_path / "tree")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    first = replicate(served, replica, pub(keys))
    make_many(tree, dirs=6, files=15, tag=b"second")  # every file changes
    for p in tree.rglob("f*"):
        os.utime(p, (time.time() + 10, time.time() + 10))
    publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    return first


@pytest.mark.parametrize("fault", ["error", "drip", "hang-catalog"])
def test_failing_or_slow_source_leaves_the_manifest_and_names_the_object(repo, keys, tmp_path, served, fault):
    replica = tmp_path / "stratum1"
    _two_revisions(repo, keys, tmp_path, served, replica)
    old_manifest = (replica / ".cvmfspublished").read_bytes()
    with Repository(repo) as r:
        if fault == "hang-catalog":
            victim = f"data/{r.manifest.root_catalog[:2]}/{r.manifest.root_catalog[2:]}C"
        else:
            victim = "data/" + next(iter(sorted(
                p for p in objects(repo) - objects(replica) if not p.endswith(("C", "H", "X")))))[5:]
    server, url = faulty_server(repo, {victim: "hang" if fault == "hang-catalog" else fault})
    try:
        start = time.monotonic()
        limits = ["--timeout", "1", "--object-deadline", "10"] if fault == "hang-catalog" else \
            ["--timeout", "2", "--object-deadline", "1.5"]
        proc = run_cli("cvmfs", "replicate", url, replica, "--pubkey", keys / f"{FQRN}.pub", *limits, check=False)
        assert time.monotonic() - start < 30
        err = proc.stderr.decode().strip()
        assert proc.returncode != 0 and victim in err and len(err.splitlines()) == 1, err
        assert {"error": "HTTP 503", "drip": "deadline exceeded", "hang-catalog": "timed out"}[fault] in err, err
        assert (replica / ".cvmfspublished").read_bytes() == old_manifest
        run_cli("cvmfs", "verify", replica, "--pubkey", keys / f"{FQRN}.pub")
    finally:
        server.shutdown()
        server.server_close()
    # the source heals: the next run completes
    replicate(served, replica, pub(keys))
    assert_same_snapshot(repo, replica, keys)


def test_replication_killed_then_resumed(repo, keys, tmp_path, served):
    replica = tmp_path / "stratum1"
    _two_revisions(repo, keys, tmp_path, served, replica)
    old_manifest = (replica / ".cvmfspublished").read_bytes()
    had = len(objects(replica))
    server, url = faulty_server(repo, delay=0.02)
    try:
        p = subprocess.Popen([sys.executable, "-m", "cernvm_build.cli", "cvmfs", "replicate", url, str(replica),
                              "--pubkey", str(keys / f"{FQRN}.pub"), "-j", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(objects(replica)) < had + 10 and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL, "the replication finished before it could be killed"
    finally:
        server.shutdown()
        server.server_close()
    partial = len(objects(replica)) - had
    assert partial >= 10
    assert (replica / ".cvmfspublished").read_bytes() == old_manifest  # old revision still served ...
    run_cli("cvmfs", "verify", replica, "--pubkey", keys / f"{FQRN}.pub")  # ... and complete
    res = replicate(served, replica, pub(keys))
    assert res.objects_present >= partial  # the rerun does not fetch again what the killed run stored
    assert_same_snapshot(repo, replica, keys)


def test_concurrent_runs_are_serialized(repo, keys, tmp_path, served):
    replica = tmp_path / "stratum1"
    make_many(tmp_path / "tree", dirs=1, files=3)
    publish(tmp_path / "tree", repo, keys, PublishOptions(tag="v1", **SMALL))
    replicate(served, replica, pub(keys))
    with repository_lock(replica):
        with pytest.raises(CvmfsBusyError, match="busy"):
            replicate(served, replica, pub(keys))
        proc = run_cli("cvmfs", "replicate", served, replica, "--pubkey", keys / f"{FQRN}.pub", check=False)
        assert proc.returncode == 3 and b"busy" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # --wait: a second run waits for the first one
    results = []

    def run():
        results.append(replicate(served, replica, pub(keys), wait_lock=20))

    with repository_lock(replica):
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        assert not results
    t.join(30)
    assert results and results[0].up_to_date


def test_replica_of_a_replica(repo, keys, tmp_path, served):
    tree = make_many(tmp_path / "tree", dirs=3, files=5)
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    s1 = tmp_path / "stratum1"
    replicate(served, s1, pub(keys))
    server, url = serve_in_thread(s1)
    try:
        s2 = tmp_path / "stratum1b"
        proc = run_cli("cvmfs", "replicate", url, s2, "--pubkey", keys / f"{FQRN}.pub")
        assert b"replicated" in proc.stdout
    finally:
        server.shutdown()
        server.server_close()
    assert_same_snapshot(repo, s2, keys)
    assert objects(s2) == objects(s1)


def test_replicate_the_repository_written_by_cvmfs_server(tmp_path):
    with tarfile.open(FIXTURE_DIR / "repository.tar.gz") as tar:
        tar.extractall(tmp_path / "src")
    src = tmp_path / "src" / "cvmfs" / "test.cern.ch"
    master = FIXTURE_DIR / "master.pub"
    server, url = serve_in_thread(src)
    try:
        replica = tmp_path / "stratum1"
        refused = run_cli("cvmfs", "replicate", url, replica, "--pubkey", master, check=False)
        assert refused.returncode != 0 and b"expired" in refused.stderr
        assert not (replica / ".cvmfspublished").exists()
        run_cli("cvmfs", "replicate", url, replica, "--pubkey", master, "--allow-expired-whitelist")
    finally:
        server.shutdown()
        server.server_close()
    proc = run_cli("cvmfs", "verify", replica, "--pubkey", master, "--allow-expired-whitelist")
    assert b"OK" in proc.stdout
    assert (replica / ".cvmfspublished").read_bytes() == (src / ".cvmfspublished").read_bytes()
    with Repository(src, check_whitelist=False) as s, Repository(replica, check_whitelist=False) as r:
        assert [t.name for t in r.tags()] == [t.name for t in s.tags()]
        for t in s.tags():
            with Repository(replica, tag=t.name, check_whitelist=False) as rt:
                verify_repository(rt)
        for e in s.walk():
            if e.is_regular:
                assert r.read(e.path) == s.read(e.path)
